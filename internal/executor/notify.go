package executor

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/spear-go/spear/internal/callback"
	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
)

// maxCallbacks bounds the deliveries in progress; more wait their turn.
const maxCallbacks = 64

// notify delivers a terminal execution's completion callback, if it asked
// for one, in the background, and records the outcome on the execution.
// Deliveries in progress when the node stops are not resumed.
func (m *Manager) notify(r *execution.Record) {
	if r.Callback == nil || r.Callback.URL == "" {
		return
	}
	body := m.callbackBody(r)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		select {
		case m.callbackSlots <- struct{}{}:
		case <-m.baseCtx.Done():
			return
		}
		defer func() { <-m.callbackSlots }()
		out := m.callbacks.Deliver(m.baseCtx, r.Callback.URL, r.ID, body)
		if m.opts.Hooks != nil {
			m.opts.Hooks.CallbackDelivered(out.State)
		}
		m.recordCallback(r.ID, out)
	}()
}

func (m *Manager) callbackBody(r *execution.Record) []byte {
	if m.opts.CallbackBody != nil {
		return m.opts.CallbackBody(r)
	}
	b, _ := json.Marshal(r)
	return b
}

// recordCallback stores a delivery's outcome on the execution's record,
// once that record is stored (a sync execution's is written in the
// background).
func (m *Manager) recordCallback(id string, out callback.Outcome) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(m.baseCtx), 30*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		rec, rev, err := m.store.GetRecord(ctx, id)
		if err == nil {
			rec.Callback = &execution.Callback{
				URL: rec.Callback.URL, State: out.State, Attempts: out.Attempts,
				LastStatusCode: out.LastStatusCode, LastError: out.LastError, DeliveredAt: out.DeliveredAt,
			}
			if _, err = m.store.UpdateRecord(ctx, rec, rev); err == nil {
				return
			}
		}
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) && !errors.Is(err, errdefs.ErrFailedPrecondition) {
			m.log.Warn("recording callback delivery", "execution", id, "err", err)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
