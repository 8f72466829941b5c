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

// Submit durably accepts an async execution: its PENDING record, index
// entry and queue message are written in one pipelined round trip. Use it
// only for fresh execution ids (duplicates are not detected); Enqueue after
// CreateRecord otherwise.
func (s *Store) Submit(ctx context.Context, spec *execution.Spec, rec *execution.Record) error {
	msg, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("encode spec: %w", err)
	}
	if len(msg) > int(s.opts.MaxPayload)-1024 {
		return errdefs.New(errdefs.ErrResourceExhausted, "INPUT_TOO_LARGE",
			"async input of %d bytes exceeds the queue's message limit of %d bytes", len(spec.Input), s.opts.MaxPayload-1024)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode record: %w", err)
	}
	// The record goes first, so the worker usually finds it; the queue
	// message is the source of truth either way.
	recF, err := s.js.PublishAsync(kvSubject(BucketExecutions, rec.ID), b)
	if err != nil {
		return unavailable("create execution record", err)
	}
	idxF, err := s.js.PublishAsync(kvSubject(BucketExecIndex, rec.TaskID+"."+rec.ID), nil)
	if err != nil {
		return unavailable("index execution record", err)
	}
	qF, err := s.js.PublishAsync(queueSubjectBase+spec.ExecutionID, msg, jetstream.WithMsgID(spec.ExecutionID))
	if err != nil {
		return unavailable("enqueue execution", err)
	}
	if err := awaitAll(ctx, []jetstream.PubAckFuture{qF}, "enqueue execution"); err != nil {
		return err
	}
	// Queued: accepted. A record write that failed is repaired by the
	// worker, which creates the record from the queued spec.
	if err := awaitAll(ctx, []jetstream.PubAckFuture{recF, idxF}, "create execution record"); err != nil {
		s.log.Warn("pending record not written; the worker will create it", "execution", rec.ID, "err", err)
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

// Fetch takes up to n executions from the queue, handing each to handle as
// it arrives, and returns when n were handed over or maxWait passed (a
// one-off take; workers use Stream).
func (s *Store) Fetch(ctx context.Context, n int, maxWait time.Duration, handle func(*Delivery)) error {
	batch, err := s.workers.Fetch(n, jetstream.FetchMaxWait(maxWait))
	if err != nil {
		return unavailable("fetch from queue", err)
	}
	for msg := range batch.Messages() {
		if d := s.delivery(msg); d != nil {
			handle(d)
		}
	}
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
		return unavailable("fetch from queue", err)
	}
	return nil
}

// Stream delivers queued executions as a continuous flow, keeping at most
// buffer of them fetched ahead in the client (the rest stay in JetStream).
type Stream struct {
	it    jetstream.MessagesContext
	store *Store
}

// Stream starts a flow of deliveries; Stop it when done.
func (s *Store) Stream(buffer int) (*Stream, error) {
	it, err := s.workers.Messages(jetstream.PullMaxMessages(buffer))
	if err != nil {
		return nil, unavailable("consume queue", err)
	}
	return &Stream{it: it, store: s}, nil
}

// Next returns the next delivery, waiting until ctx ends. A message that
// cannot be decoded is terminated and skipped.
func (st *Stream) Next(ctx context.Context) (*Delivery, error) {
	for {
		msg, err := st.it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, unavailable("consume queue", err)
		}
		if d := st.store.delivery(msg); d != nil {
			return d, nil
		}
	}
}

// delivery decodes a queue message; one that cannot be decoded is
// terminated (it would fail again on every delivery) and nil returned.
func (s *Store) delivery(msg jetstream.Msg) *Delivery {
	var spec execution.Spec
	if err := json.Unmarshal(msg.Data(), &spec); err != nil || spec.ExecutionID == "" {
		s.log.Error("dropping undecodable queue message", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return nil
	}
	attempt := 1
	if md, err := msg.Metadata(); err == nil {
		attempt = int(md.NumDelivered)
	}
	return &Delivery{Spec: &spec, Attempt: attempt, msg: msg}
}

// Stop ends the flow; messages fetched ahead and not handed out are
// redelivered after the ack wait.
func (st *Stream) Stop() { st.it.Stop() }

// AckWait is the queue's redelivery timeout.
func (s *Store) AckWait() time.Duration { return s.opts.AckWait }
