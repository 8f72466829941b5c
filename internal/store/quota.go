package store

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/retry"
)

// A task's max_queued bounds its executions in the queue (waiting, or
// taken and not finished) across every node that shares it. Counting the
// task's messages and then publishing is not enough: nodes that count at
// once all see room. So the publish is a compare-and-set on the task's
// subjects: it carries the sequence of the task's last message as read
// before counting (Nats-Expected-Last-Subject-Sequence with
// Nats-Expected-Last-Subject-Sequence-Subject, the task's subject filter),
// and JetStream stores it only if no message of the task was added since.
// A message added meanwhile makes it fail, and it is counted and tried
// again; messages removed meanwhile only make the count high. So the
// count a stored message was admitted on is never below the truth: the
// bound is exact, whatever the number of nodes.
//
// Cost, next to an unbounded submission: a read of the task's last message
// and a count (two round trips), and the record written after the queue
// message instead of with it; concurrent submissions of one task retry
// (those to one node take turns: executor's admission lock).

// ErrQueueFull: the task's queue holds its max_queued executions.
var ErrQueueFull = errors.New("the task's queue is full")

// casBackoff spaces the tries of a compare-and-set that lost to another
// submission of the same task.
var casBackoff = retry.Backoff{Base: time.Millisecond, Max: 50 * time.Millisecond}

// maxCASTries bounds them: past it the queue is too contended to admit.
const maxCASTries = 64

// EnqueueWithin is Enqueue for a task whose queue holds at most limit
// executions: ErrQueueFull when it holds that many already.
func (s *Queue) EnqueueWithin(ctx context.Context, spec *execution.Spec, limit int64) (duplicate bool, err error) {
	filter := taskSubjects(spec.TaskID)
	if len(spec.Input) > s.sizes.Inline {
		// Refused before an input too large for a message is stored
		// apart, if it can be told now.
		if n, err := s.OfTask(ctx, spec.TaskID); err != nil {
			return false, err
		} else if n >= limit {
			return false, ErrQueueFull
		}
	}
	b, err := s.message(ctx, spec)
	if err != nil {
		return false, err
	}
	for attempt := 1; ; attempt++ {
		last, err := s.lastOf(ctx, filter)
		if err != nil {
			return false, err
		}
		n, err := s.OfTask(ctx, spec.TaskID)
		if err != nil {
			return false, err
		}
		if n >= limit {
			return false, ErrQueueFull
		}
		ack, err := s.publishQueued(ctx, queueSubject(spec), b, jetstream.WithMsgID(msgID(spec)),
			jetstream.WithExpectLastSequenceForSubject(last, filter))
		if err == nil {
			return ack.Duplicate, nil
		}
		if !wrongLastSeq(err) || attempt >= maxCASTries {
			return false, s.unavailable("enqueue execution", err)
		}
		if !retry.Sleep(ctx, casBackoff.Delay(attempt)) {
			return false, ctx.Err()
		}
	}
}

// lastOf is the sequence of the last queue message on the subjects of
// filter (0: none).
func (s *core) lastOf(ctx context.Context, filter string) (uint64, error) {
	msg, err := request(s, ctx, false, func(ctx context.Context) (*jetstream.RawStreamMsg, error) {
		return s.queue.GetLastMsgForSubject(ctx, filter)
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, s.unavailable("queue info", err)
	}
	return msg.Sequence, nil
}

// wrongLastSeq says whether a publish was refused by its expected last
// sequence (10071; 10164 from a replicated stream).
func wrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
