package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
)

// Enqueue durably appends an async execution to the work queue. Publishing
// the same execution id twice within two minutes stores it once.
func (s *Store) Enqueue(ctx context.Context, spec *execution.Spec) error {
	b, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("encode spec: %w", err)
	}
	if len(b) > int(s.opts.MaxPayload)-1024 {
		return errdefs.New(errdefs.ErrResourceExhausted, "INPUT_TOO_LARGE",
			"async input of %d bytes exceeds the queue's message limit of %d bytes", len(spec.Input), s.opts.MaxPayload-1024)
	}
	if _, err := s.js.Publish(ctx, queueSubjectBase+spec.ExecutionID, b, jetstream.WithMsgID(spec.ExecutionID)); err != nil {
		return unavailable("enqueue execution", err)
	}
	return nil
}

// IsQueued reports whether execution id still has a message in the queue
// (waiting, or delivered and not yet acknowledged).
func (s *Store) IsQueued(ctx context.Context, id string) (bool, error) {
	_, err := s.queue.GetLastMsgForSubject(ctx, queueSubjectBase+id)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, unavailable("look up queue", err)
	}
	return true, nil
}

// QueueDepth is the number of executions in the queue: waiting ones plus
// those delivered to a worker and not yet finished.
func (s *Store) QueueDepth(ctx context.Context) (waiting, inFlight int64, err error) {
	info, err := s.workers.Info(ctx)
	if err != nil {
		return 0, 0, unavailable("queue info", err)
	}
	return int64(info.NumPending), int64(info.NumAckPending), nil
}

// Delivery is one execution taken from the queue. The worker must end it
// with Ack (done: terminal state recorded) or Nak (give it back).
type Delivery struct {
	Spec *execution.Spec
	// Attempt counts deliveries of this message, from 1.
	Attempt int
	msg     jetstream.Msg
}

// Ack removes the execution from the queue for good.
func (d *Delivery) Ack(ctx context.Context) error {
	if err := d.msg.DoubleAck(ctx); err != nil {
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

// Fetch takes up to n executions from the queue, handing each to handle as
// it arrives, and returns when n were handed over or maxWait passed. A
// message that cannot be decoded is terminated and skipped.
func (s *Store) Fetch(ctx context.Context, n int, maxWait time.Duration, handle func(*Delivery)) error {
	batch, err := s.workers.Fetch(n, jetstream.FetchMaxWait(maxWait))
	if err != nil {
		return unavailable("fetch from queue", err)
	}
	for msg := range batch.Messages() {
		var spec execution.Spec
		if err := json.Unmarshal(msg.Data(), &spec); err != nil || spec.ExecutionID == "" {
			s.log.Error("dropping undecodable queue message", "subject", msg.Subject(), "err", err)
			_ = msg.Term()
			continue
		}
		attempt := 1
		if md, err := msg.Metadata(); err == nil {
			attempt = int(md.NumDelivered)
		}
		handle(&Delivery{Spec: &spec, Attempt: attempt, msg: msg})
	}
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
		return unavailable("fetch from queue", err)
	}
	return nil
}

// AckWait is the queue's redelivery timeout.
func (s *Store) AckWait() time.Duration { return s.opts.AckWait }
