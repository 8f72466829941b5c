package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/retry"
)

// Bands is the number of priority bands of the queue. Executions wait in
// JetStream by band, so higher priority work is taken first across the
// cluster; within a band, in arrival order.
const Bands = 5

// Band maps a priority to its band: ≤-10, <0, 0, <10, ≥10.
func Band(priority int32) int {
	switch {
	case priority <= -10:
		return 0
	case priority < 0:
		return 1
	case priority == 0:
		return 2
	case priority < 10:
		return 3
	default:
		return 4
	}
}

// queueSubject is where an execution waits: by runtime, band, task and
// id.
func queueSubject(spec *execution.Spec) string {
	return fmt.Sprintf("%s%s.p%d.%s.%s", queueSubjectBase, spec.Runtime, bandOf(spec), spec.TaskID, spec.ExecutionID)
}

// bandOf is the band an execution waits in: its priority's, except that
// a sync or stream call handed on by the node it reached, whose caller
// waits, goes first (in the top band).
func bandOf(spec *execution.Spec) int {
	if spec.Mode != execution.ModeAsync {
		return Bands - 1
	}
	return Band(spec.Priority)
}

// taskSubjects is the filter of every queue subject of a task's
// executions.
func taskSubjects(taskID string) string { return queueSubjectBase + "*.*." + taskID + ".*" }

// Enqueue durably appends an async execution to the work queue. Publishing
// the same execution id twice within two minutes stores it once.
// It reports whether the message was a duplicate (the same id queued within
// the window), which stores nothing.
func (s *Queue) Enqueue(ctx context.Context, spec *execution.Spec) (duplicate bool, err error) {
	b, err := s.message(ctx, spec)
	if err != nil {
		return false, err
	}
	ack, err := s.publishQueued(ctx, queueSubject(spec), b, jetstream.WithMsgID(msgID(spec)))
	if err != nil {
		return false, s.unavailable("enqueue execution", err)
	}
	s.announce(spec)
	return ack.Duplicate, nil
}

// publishQueued publishes a queue message with a message id. A stream
// with several copies refuses a message whose id another publish is
// storing at that moment (JetStream 10158): it is published again, once
// that one is stored, as an ordinary duplicate.
func (s *Queue) publishQueued(ctx context.Context, subject string, b []byte, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	var ack *jetstream.PubAck
	err := inProcessBackoff.Do(ctx, 12, func(int) error {
		var err error
		ack, err = request(s.core, ctx, true, func(ctx context.Context) (*jetstream.PubAck, error) {
			return s.js.Publish(ctx, subject, b, opts...)
		})
		var apiErr *jetstream.APIError
		if err != nil && !(errors.As(err, &apiErr) && apiErr.ErrorCode == jsDuplicateInProcess) {
			return retry.Permanent(err)
		}
		return err
	})
	return ack, err
}

// jsDuplicateInProcess is JetStream's refusal of a message whose id
// another publish is storing; inProcessBackoff spaces the publishes
// again (1 ms doubling; twelve tries span about 4 s).
const jsDuplicateInProcess = 10158

var inProcessBackoff = retry.Backoff{Base: time.Millisecond, Max: time.Second}

// queueMessage encodes spec as a queue message; an input larger than
// Sizes.Inline is stored apart and referred to.
func (s *Queue) message(ctx context.Context, spec *execution.Spec) ([]byte, error) {
	if spec.Runtime == "" {
		return nil, fmt.Errorf("queue execution %q: %w: no runtime", spec.ExecutionID, errdefs.ErrInternal)
	}
	if len(spec.Input) > s.sizes.Inline {
		ref, err := s.inputs.Put(ctx, spec.ExecutionID, spec.Input)
		if err != nil {
			return nil, err
		}
		c := *spec
		c.Input, c.InputRef = nil, ref
		spec = &c
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("encode spec: %w", err)
	}
	if len(b) > s.sizes.Payload-1024 {
		return nil, errdefs.RequestTooLarge.New("the execution's environment and metadata take %d bytes, over the queue's message limit of %d bytes", len(b), s.sizes.Payload-1024)
	}
	return b, nil
}

// Accept durably accepts an async execution of a fresh id in one write:
// its queue message, which is its record until a worker takes it (see
// Records.Get, and Spec.Unrecorded).
func (s *Queue) Accept(ctx context.Context, spec *execution.Spec) error {
	spec.Unrecorded = true
	msg, err := s.message(ctx, spec)
	if err != nil {
		return err
	}
	// No message id: a fresh id has no earlier message to be deduplicated
	// against, and the stream's duplicate window would hold one entry per
	// accepted execution for two minutes.
	if _, err := s.publishQueued(ctx, queueSubject(spec), msg); err != nil {
		return s.unavailable("enqueue execution", err)
	}
	s.announce(spec)
	return nil
}

// Submit durably accepts an async execution: its PENDING record, index
// entry and queue message are written in one pipelined round trip. Use it
// only for fresh execution ids (duplicates are not detected); Enqueue
// otherwise.
func (s *Queue) Submit(ctx context.Context, spec *execution.Spec, rec *execution.Record) error {
	msg, err := s.message(ctx, spec)
	if err != nil {
		return err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode record: %w", err)
	}
	// The record goes first, so the worker usually finds it; the queue
	// message is the source of truth either way. It is created only if
	// absent: with 3 copies the record's stream may commit it after a
	// worker, which found none, created and claimed it; a plain put would
	// then set the running execution back to PENDING.
	recF, err := s.js.PublishAsync(kvSubject(BucketExecutions, rec.ID), b, jetstream.WithExpectLastSequencePerSubject(0))
	if err != nil {
		return s.unavailable("create execution record", err)
	}
	idxF, err := s.js.PublishAsync(kvSubject(BucketExecIndex, rec.TaskID+"."+rec.ID), nil)
	if err != nil {
		return s.unavailable("index execution record", err)
	}
	qF, err := s.js.PublishAsync(queueSubject(spec), msg, jetstream.WithMsgID(msgID(spec)))
	if err != nil {
		return s.unavailable("enqueue execution", err)
	}
	// Accepted or not within the request bound (no quorum: not at all).
	qctx, cancel := s.bounded(ctx)
	defer cancel()
	if err := s.awaitAll(qctx, []jetstream.PubAckFuture{qF}, "enqueue execution"); err != nil {
		return err
	}
	s.announce(spec)
	// Queued: accepted. A record write that failed is repaired by the
	// worker, which creates the record from the queued spec.
	if err := s.awaitAll(ctx, []jetstream.PubAckFuture{recF}, "create execution record"); err != nil && !wrongLastSeq(err) {
		s.log.Warn("pending record not written; the worker will create it", "execution", rec.ID, "err", err)
	}
	if s.awaitAll(ctx, []jetstream.PubAckFuture{idxF}, "index execution record") != nil {
		// The worker finds the record and writes no index entry: it is
		// written here, or the execution is missing from its task's list.
		if err := s.indexRecord(ctx, rec.TaskID, rec.ID); err != nil {
			s.log.Warn("execution not indexed: its task's listing misses it", "execution", rec.ID, "err", err)
		}
	}
	return nil
}

// msgID deduplicates a queue message: the execution id, plus the requeue
// generation for a dead-lettered execution queued again.
func msgID(spec *execution.Spec) string {
	if spec.Requeues > 0 {
		return fmt.Sprintf("%s~%d", spec.ExecutionID, spec.Requeues)
	}
	return spec.ExecutionID
}

// OfTask counts a task's executions in the queue: waiting, and taken
// by a worker but not finished.
func (s *Queue) OfTask(ctx context.Context, taskID string) (int64, error) {
	info, err := request(s.core, ctx, false, func(ctx context.Context) (*jetstream.StreamInfo, error) {
		return s.queue.Info(ctx, jetstream.WithSubjectFilter(taskSubjects(taskID)))
	})
	if err != nil {
		return 0, s.unavailable("queue info", err)
	}
	var n int64
	for _, c := range info.State.Subjects {
		n += int64(c)
	}
	return n, nil
}

// Has reports whether an execution of a task is in the queue (waiting,
// or taken by a worker and not finished).
func (s *Queue) Has(ctx context.Context, taskID, id string) (bool, error) {
	info, err := request(s.core, ctx, false, func(ctx context.Context) (*jetstream.StreamInfo, error) {
		return s.queue.Info(ctx, jetstream.WithSubjectFilter(queueSubjectBase+"*.*."+taskID+"."+id))
	})
	if err != nil {
		return false, s.unavailable("queue info", err)
	}
	return len(info.State.Subjects) > 0, nil
}

// Withdraw removes execution id's message from the queue, waiting or
// taken by a worker: a cancel of a queued execution withdraws it, so that
// no worker takes it later (a worker that took it already finds the
// cancel marked where it runs it, or recorded when it writes its claim).
func (s *Queue) Withdraw(ctx context.Context, id string) error {
	_, err := request(s.core, ctx, true, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, s.queue.Purge(ctx, jetstream.WithPurgeSubject(queueSubjectBase+"*.*.*."+id))
	})
	if err != nil {
		return s.unavailable("withdraw queued execution", err)
	}
	return nil
}

// queuedSpec returns the spec of execution id while it is in the queue
// (its record is not written until a worker takes it, or could not be);
// ErrNotFound otherwise.
func (s *core) queuedSpec(ctx context.Context, id string) (*execution.Spec, error) {
	msg, err := request(s, ctx, false, func(ctx context.Context) (*jetstream.RawStreamMsg, error) {
		return s.queue.GetLastMsgForSubject(ctx, queueSubjectBase+"*.*.*."+id)
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, errdefs.ExecutionNotFound.New("execution %q not found", id)
	}
	if err != nil {
		return nil, s.unavailable("read queued execution", err)
	}
	var spec execution.Spec
	if err := json.Unmarshal(msg.Data, &spec); err != nil {
		return nil, fmt.Errorf("decode queued execution %q: %w: %w", id, errdefs.ErrInternal, err)
	}
	return &spec, nil
}

// queuedIDs lists the ids of the executions in the queue, of one task
// when taskID is set.
func (s *core) queuedIDs(ctx context.Context, taskID string) ([]string, error) {
	filter := queueSubjectBase + ">"
	if taskID != "" {
		filter = taskSubjects(taskID)
	}
	info, err := request(s, ctx, false, func(ctx context.Context) (*jetstream.StreamInfo, error) {
		return s.queue.Info(ctx, jetstream.WithSubjectFilter(filter))
	})
	if err != nil {
		return nil, s.unavailable("list queued executions", err)
	}
	ids := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		ids = append(ids, subj[strings.LastIndexByte(subj, '.')+1:])
	}
	return ids, nil
}

// QueueDepthByBand is the number of executions waiting in the queue by
// priority band, index 0 the lowest.
func (s *Queue) DepthByBand(ctx context.Context) ([]int64, error) {
	out := make([]int64, Bands)
	err := s.sourceInfos(ctx, func(src *Source, info *jetstream.ConsumerInfo) {
		out[src.Band] += int64(info.NumPending)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// QueueDepth is the number of executions in the queue: waiting ones plus
// those delivered to a worker and not yet finished.
func (s *Queue) Depth(ctx context.Context) (waiting, inFlight int64, err error) {
	err = s.sourceInfos(ctx, func(_ *Source, info *jetstream.ConsumerInfo) {
		waiting += int64(info.NumPending)
		inFlight += int64(info.NumAckPending)
	})
	if err != nil {
		return 0, 0, err
	}
	return waiting, inFlight, nil
}

// sourceInfos reads the opened sources' consumers. Figures (estimates,
// stats), not worth a wait: none while writes fail, and all within a
// third of the request timeout.
func (s *Queue) sourceInfos(ctx context.Context, add func(*Source, *jetstream.ConsumerInfo)) error {
	if err := s.quorum.failing(); err != nil {
		return s.unavailable("queue info", err)
	}
	ctx, cancel := context.WithTimeoutCause(ctx, s.opts.OpTimeout/3, errNoAnswer)
	defer cancel()
	for _, src := range s.opened() {
		info, err := request(s.core, ctx, false, src.c.Info)
		if err != nil {
			return s.unavailable("queue info", err)
		}
		add(src, info)
	}
	return nil
}

// Delivery is one execution taken from the queue. The worker must end it
// with Ack (done: terminal state recorded) or Nak (give it back).
type Delivery struct {
	Spec *execution.Spec
	// Attempt counts deliveries of this message, from 1.
	Attempt int
	msg     jetstream.Msg
}

// Ack removes the execution from the queue for good. It does not wait for
// JetStream to confirm: the terminal record is stored before, so an ack that
// is lost only makes the message come back, and the worker that takes it
// finds the execution finished and acks it again.
func (d *Delivery) Ack(ctx context.Context) error {
	if err := d.msg.Ack(); err != nil {
		return unavailable("ack queued execution", err)
	}
	return nil
}

// Nak returns the execution to the queue, to be delivered again after delay.
func (d *Delivery) Nak(delay time.Duration) error {
	if err := d.msg.NakWithDelay(delay); err != nil {
		return unavailable("nak queued execution", err)
	}
	return nil
}

// InProgress tells JetStream the execution is still being worked on, so it
// is not handed to another worker.
func (d *Delivery) InProgress() error { return d.msg.InProgress() }
