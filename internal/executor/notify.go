package executor

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/spear-go/spear/internal/callback"
	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/retry"
	"github.com/spear-go/spear/internal/store"
)

// maxCallbacks bounds the deliveries in progress; more wait their turn.
const maxCallbacks = 64

// notify puts a terminal execution's completion callback, if it asked for
// one, in the durable outbox (store.QueueCallback), from which
// deliverCallbacks delivers it on this node or, after a crash, another.
// Should the outbox refuse it, the callback is delivered from memory at
// once (and then not resumed after a crash).
func (m *outbox) notify(r *execution.Record) {
	if r.Callback == nil || r.Callback.URL == "" {
		return
	}
	due := store.DueCallback{ExecutionID: r.ID, Attempts: r.Attempts, URL: r.Callback.URL, Body: m.callbackBody(r)}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(m.baseCtx), 5*time.Second)
	err := m.store.Callbacks.Queue(ctx, due)
	cancel()
	if err == nil {
		return
	}
	m.log.Warn("callback outbox unavailable; delivering from memory", "execution", r.ID, "err", err)
	m.wg.Go(func() {
		select {
		case m.callbackSlots <- struct{}{}:
		case <-m.baseCtx.Done():
			return
		}
		defer func() { <-m.callbackSlots }()
		m.deliver(due)
	})
}

// deliverCallbacks delivers the outbox's due callbacks, at most
// maxCallbacks at a time, until ctx ends. Each is acked once its outcome is
// on the record; one cut short by the node stopping comes back later.
func (m *outbox) deliverCallbacks(ctx context.Context) {
	var cs *store.CallbackStream
	for {
		var err error
		if cs, err = m.store.Callbacks.Due(maxCallbacks); err == nil {
			break
		}
		m.log.Warn("reading the callback outbox", "err", err)
		if !retry.Sleep(ctx, time.Second) {
			return
		}
	}
	defer cs.Stop()
	for {
		d, err := cs.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			m.log.Warn("reading the callback outbox", "err", err)
			if !retry.Sleep(ctx, 100*time.Millisecond) {
				return
			}
			continue
		}
		select {
		case m.callbackSlots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		m.wg.Go(func() {
			defer func() { <-m.callbackSlots }()
			if m.callbackRecorded(ctx, d.DueCallback) { // delivered before a crash
				_ = d.Ack()
				return
			}
			stop := m.keepCallback(ctx, d)
			recorded := m.deliver(d.DueCallback)
			stop()
			if recorded {
				_ = d.Ack()
			}
		})
	}
}

// keepCallback keeps d with this node while it is being delivered, until
// the returned stop is called.
func (m *outbox) keepCallback(ctx context.Context, d *store.CallbackDelivery) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); m.dispatcher.heartbeat(ctx, d) }()
	return func() { cancel(); <-done }
}

// callbackRecorded reports whether the outcome of due is already on the
// execution's record.
func (m *outbox) callbackRecorded(ctx context.Context, due store.DueCallback) bool {
	rec, _, err := m.store.Records.Get(ctx, due.ExecutionID)
	if err != nil || rec.Callback == nil || rec.Attempts != due.Attempts {
		return false
	}
	return rec.Callback.State == callback.StateDelivered || rec.Callback.State == callback.StateFailed
}

// deliver sends a callback and records the outcome; it reports false when
// the node stopped first (nothing recorded).
func (m *outbox) deliver(due store.DueCallback) bool {
	out := m.callbacks.Deliver(m.baseCtx, due.URL, due.ExecutionID, due.Body)
	if m.baseCtx.Err() != nil {
		return false
	}
	if m.opts.Hooks != nil {
		m.opts.Hooks.CallbackDelivered(out.State)
	}
	m.recordCallback(due.ExecutionID, out)
	return true
}

func (m *outbox) callbackBody(r *execution.Record) []byte {
	if m.opts.CallbackBody != nil {
		return m.opts.CallbackBody(r)
	}
	b, _ := json.Marshal(r)
	return b
}

// recordCallback stores a delivery's outcome on the execution's record,
// once that record is stored (a sync execution's is written in the
// background).
func (m *outbox) recordCallback(id string, out callback.Outcome) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(m.baseCtx), 30*time.Second)
	defer cancel()
	// A compare-and-set, tried again while the record is not written yet or
	// changes under it.
	var failed error
	err := retry.Backoff{Base: 20 * time.Millisecond, Max: 500 * time.Millisecond}.Do(ctx, 0, func(int) error {
		rec, rev, err := m.store.Records.Get(ctx, id)
		if err == nil {
			rec.Callback = &execution.Callback{
				URL: rec.Callback.URL, State: out.State, Attempts: out.Attempts,
				LastStatusCode: out.LastStatusCode, LastError: out.LastError, DeliveredAt: out.DeliveredAt,
			}
			_, err = m.store.Records.Update(ctx, rec, rev)
		}
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) && !errors.Is(err, errdefs.ErrFailedPrecondition) {
			failed = err // not worth retrying
			return nil
		}
		return err
	})
	if err = errors.Join(err, failed); err != nil {
		m.log.Warn("recording callback delivery", "execution", id, "err", err)
	}
}
