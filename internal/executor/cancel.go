package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	spearrt "github.com/spear-go/spear/internal/runtime"
)

// CancelOutcome is the answer to a cancel request.
type CancelOutcome struct {
	// Cancelled is false when the execution had already ended.
	Cancelled bool             `json:"cancelled"`
	Status    execution.Status `json:"status"`
	Message   string           `json:"message"`
}

// Cancel stops execution id: a queued one never starts, a running one is
// stopped (on whichever node runs it) and ends CANCELLED; a finished one is
// left as it is and reported with Cancelled false.
func (m *Cancels) Cancel(ctx context.Context, id, reason string, force bool) (CancelOutcome, error) {
	if err := execution.ValidateID(id); err != nil {
		return CancelOutcome{}, err
	}
	if out, ok := m.cancelLocal(ctx, id, reason, force); ok {
		return out, nil
	}
	if out, ok := m.cancelRemote(ctx, id, reason, force); ok {
		return out, nil
	}
	// Nobody runs it: it waits in the queue (or its node died). Mark it
	// CANCELLED; the worker that takes it from the queue drops it.
	for range 5 {
		rec, rev, err := m.store.Records.Get(ctx, id)
		if err != nil {
			return CancelOutcome{}, err
		}
		if rec.Status.Terminal() {
			return finished(rec.Status), nil
		}
		if rec.Status == execution.StatusRunning {
			// A worker claimed it since we looked: stop it where it is
			// live (overwriting its claim would let it run anyway).
			if out, ok := m.cancelLocal(ctx, id, reason, force); ok {
				return out, nil
			}
			if out, ok := m.cancelRemote(ctx, id, reason, force); ok {
				return out, nil
			}
		}
		rec.Status = execution.StatusCancelled
		rec.ErrorCode = errdefs.Cancelled.String()
		rec.ErrorMessage = cancelCause(reason).Error()
		rec.CompletedAt = m.opts.Now()
		if _, err := m.store.Records.Update(ctx, rec, rev); err == nil {
			m.stats.record(rec)
			if m.opts.Hooks != nil { // the worker that dequeues it drops it silently
				m.opts.Hooks.Finished(rec, m.engine.runtimeOf(rec.TaskID), 0)
			}
			return CancelOutcome{Cancelled: true, Status: execution.StatusCancelled, Message: "cancelled before it started"}, nil
		} else if !errors.Is(err, errdefs.ErrFailedPrecondition) {
			return CancelOutcome{}, err
		}
		// Changed under us (a worker took it): look again, it may be live.
		if out, ok := m.cancelLocal(ctx, id, reason, force); ok {
			return out, nil
		}
		if out, ok := m.cancelRemote(ctx, id, reason, force); ok {
			return out, nil
		}
	}
	return CancelOutcome{}, fmt.Errorf("execution %q kept changing while cancelling: %w", id, errdefs.ErrUnavailable)
}

func finished(s execution.Status) CancelOutcome {
	return CancelOutcome{Status: s, Message: "the execution had already finished: " + s.String()}
}

func cancelCause(reason string) error {
	if reason == "" {
		return errCancelled
	}
	return fmt.Errorf("%w: %s", errCancelled, reason)
}

// cancelLocal cancels an execution live on this node and waits for it to
// stop.
func (m *Cancels) cancelLocal(ctx context.Context, id, reason string, force bool) (CancelOutcome, bool) {
	m.mu.Lock()
	l := m.live[id]
	m.mu.Unlock()
	if l == nil {
		return CancelOutcome{}, false
	}
	if r := l.snapshot(); r.Status.Terminal() {
		return finished(r.Status), true
	}
	cause := cancelCause(reason)
	if !force { // gently first: the runtime signals the function and waits
		cause = &spearrt.GracefulStop{Grace: m.opts.StopGrace, Reason: cause}
	}
	l.stop(cause, force)
	select {
	case <-l.done:
	case <-ctx.Done():
		return CancelOutcome{Cancelled: true, Status: execution.StatusRunning, Message: "cancel requested; the execution is still stopping"}, true
	}
	r := l.final()
	if !r.Status.Terminal() {
		// It went back to the queue (node shutting down): cancel it there.
		return CancelOutcome{}, false
	}
	if r.Status != execution.StatusCancelled {
		return finished(r.Status), true
	}
	return CancelOutcome{Cancelled: true, Status: r.Status, Message: "cancelled"}, true
}

// cancelRequested reports whether a caller asked to cancel l.
func (l *live) cancelRequested() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return errors.Is(l.cancelCause, errCancelled)
}

type cancelRequest struct {
	Reason string `json:"reason,omitempty"`
	Force  bool   `json:"force,omitempty"`
}

// cancelRemote asks the node that runs the execution, if any, to cancel it.
func (m *Cancels) cancelRemote(ctx context.Context, id, reason string, force bool) (CancelOutcome, bool) {
	if !m.shared {
		return CancelOutcome{}, false
	}
	body, _ := json.Marshal(cancelRequest{Reason: reason, Force: force})
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	answer, err := m.store.Control.RequestCancel(ctx, id, body)
	if err != nil {
		return CancelOutcome{}, false
	}
	var out CancelOutcome
	if json.Unmarshal(answer, &out) != nil {
		return CancelOutcome{}, false
	}
	return out, true
}

// onCancelRequest answers another node's cancel request for an execution
// live here; it stays silent otherwise.
func (m *Cancels) onCancelRequest(id string, body []byte, respond func([]byte)) {
	var req cancelRequest
	_ = json.Unmarshal(body, &req)
	m.mu.Lock()
	_, ok := m.live[id]
	m.mu.Unlock()
	if !ok {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(m.baseCtx, 10*time.Second)
		defer cancel()
		out, ok := m.cancelLocal(ctx, id, req.Reason, req.Force)
		if !ok {
			return
		}
		b, _ := json.Marshal(out)
		respond(b)
	}()
}
