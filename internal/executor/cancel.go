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
	if rec, rev, err := m.store.Records.Get(ctx, id); err == nil && rec.Graph != nil {
		return m.graphs.CancelGraph(ctx, rec, rev, reason)
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
		if rec.Status == execution.StatusCancelled && m.lives.markTaken(id) {
			// Taken from the queue here just as this cancel looked: it
			// started cancelled (see cancelLocal) and ended so.
			return CancelOutcome{Cancelled: true, Status: rec.Status, Message: "cancelled before it started"}, nil
		}
		if rec.Status.Terminal() {
			return finished(rec.Status), nil
		}
		running := rec.Status == execution.StatusRunning
		if running {
			// A worker claimed it since we looked: stop it where it is
			// live (overwriting its claim would let it run anyway).
			if out, ok := m.cancelLocal(ctx, id, reason, force); ok {
				return out, nil
			}
			if out, ok := m.cancelRemote(ctx, id, reason, force); ok {
				return out, nil
			}
		}
		message := "cancelled before it started"
		if h := rec.History; running && (len(h) == 0 || h[len(h)-1].N < rec.Attempts) {
			// Its node did not answer (it died, or lost contact): the
			// attempt ends here, and the fenced node drops its result
			// should it come back.
			rec.History = append(rec.History, unansweredAttempt(rec, m.opts.Now()))
			message = "cancelled; the node running it did not answer"
		}
		rec.Status = execution.StatusCancelled
		rec.ErrorCode = errdefs.Cancelled.String()
		rec.ErrorMessage = cancelCause(reason).Error()
		rec.CompletedAt = m.opts.Now()
		if _, err := m.store.Records.Update(ctx, rec, rev); err == nil {
			m.withdraw(ctx, rec, rev)
			m.stats.record(rec)
			if m.opts.Hooks != nil { // the worker that dequeues it drops it silently
				m.opts.Hooks.Finished(rec, m.engine.runtimeOf(rec.TaskID), 0)
			}
			return CancelOutcome{Cancelled: true, Status: execution.StatusCancelled, Message: message}, nil
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

// withdraw takes a queued execution just recorded CANCELLED out of the
// queue. Read from its queue message (revision 0), it may be taken by a
// worker that runs it before its claim is written (lateclaim.go): the
// cancel's marks on every node stop it there for a minute, and without
// its message no worker takes it after. A graph's step stays queued: its
// redelivery advances its graph.
func (m *Cancels) withdraw(ctx context.Context, rec *execution.Record, rev uint64) {
	if rev != 0 || rec.ParentID != "" {
		return
	}
	if err := m.store.Queue.Withdraw(ctx, rec.ID); err != nil {
		m.log.Warn("cancelled execution left in the queue: a worker that takes it a minute from now may start it, until its refused claim stops it", "execution", rec.ID, "err", err)
	}
}

// unansweredAttempt is the history entry of the attempt a cancel ends in
// the store because the node running it did not answer.
func unansweredAttempt(r *execution.Record, now time.Time) execution.Attempt {
	return execution.Attempt{
		N: max(r.Attempts, 1), Status: execution.StatusCancelled, Node: r.Node, StartedAt: r.StartedAt, CompletedAt: now,
		ErrorCode:    errdefs.Cancelled.String(),
		ErrorMessage: fmt.Sprintf("cancelled; node %s, which ran this attempt, did not answer the cancel", r.Node),
	}
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
	if l == nil {
		m.lives.markCancelled(id, cancelCause(reason))
	}
	m.mu.Unlock()
	if l == nil {
		return CancelOutcome{}, false
	}
	if r := l.snapshot(); r.Status.Terminal() {
		if r.Status == execution.StatusCancelled && l.wasPreCancelled() {
			return CancelOutcome{Cancelled: true, Status: r.Status, Message: "cancelled before it started"}, true
		}
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

// wasPreCancelled reports whether a cancel came just before l became live.
func (l *live) wasPreCancelled() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.preCancelled
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

// A cancel for an execution live on another node is asked of every node
// over NATS; only the node that runs it answers, within remoteAnswer:
// with the outcome if the execution stopped by then, else saying it is
// stopping (a graceful stop may take up to the stop grace). The asker
// waits remoteWait for an answer: none means no node runs it.
const (
	remoteWait   = 500 * time.Millisecond
	remoteAnswer = 300 * time.Millisecond
)

// cancelRemote asks the node that runs the execution, if any, to cancel
// it, and once that node answers that it is stopping, waits for the
// terminal record.
func (m *Cancels) cancelRemote(ctx context.Context, id, reason string, force bool) (CancelOutcome, bool) {
	if !m.shared {
		return CancelOutcome{}, false
	}
	body, _ := json.Marshal(cancelRequest{Reason: reason, Force: force})
	rctx, cancel := context.WithTimeout(ctx, remoteWait)
	defer cancel()
	answer, err := m.store.Control.RequestCancel(rctx, id, body)
	if err != nil {
		return CancelOutcome{}, false
	}
	var out CancelOutcome
	if json.Unmarshal(answer, &out) != nil {
		return CancelOutcome{}, false
	}
	if out.Status == execution.StatusRunning {
		return m.awaitStopped(ctx, id), true
	}
	return out, true
}

// awaitStopped waits until the record of an execution another node is
// stopping is terminal, for at most the stop grace and a margin (for the
// kill and the record's write; the caller's ctx may end it sooner).
func (m *Cancels) awaitStopped(ctx context.Context, id string) CancelOutcome {
	ctx, cancel := context.WithTimeout(ctx, m.opts.StopGrace+5*time.Second)
	defer cancel()
	for poll := 5 * time.Millisecond; ; poll = min(2*poll, 100*time.Millisecond) {
		// A sync execution's record may not be written yet: not found is
		// waited on as not terminal.
		if rec, _, err := m.store.Records.Get(ctx, id); err == nil && rec.Status.Terminal() {
			if rec.Status != execution.StatusCancelled {
				return finished(rec.Status)
			}
			return CancelOutcome{Cancelled: true, Status: rec.Status, Message: "cancelled"}
		}
		select {
		case <-ctx.Done():
			return CancelOutcome{Cancelled: true, Status: execution.StatusRunning, Message: "cancel requested; the execution is still stopping"}
		case <-time.After(poll):
		}
	}
}

// onCancelRequest answers another node's cancel request for an execution
// live here (see remoteAnswer); otherwise it stays silent and marks the
// cancel, as cancelLocal does, for the moment the execution may become
// live here (taken from the queue by a worker that had not claimed it).
func (m *Cancels) onCancelRequest(id string, body []byte, respond func([]byte)) {
	var req cancelRequest
	_ = json.Unmarshal(body, &req)
	m.mu.Lock()
	_, ok := m.live[id]
	if !ok { // it may become live here next: it starts cancelled
		m.lives.markCancelled(id, cancelCause(req.Reason))
	}
	m.mu.Unlock()
	if !ok {
		return
	}
	go func() {
		// The stop goes on past the answer: cancelLocal only stops
		// waiting for it.
		ctx, cancel := context.WithTimeout(m.baseCtx, remoteAnswer)
		defer cancel()
		out, ok := m.cancelLocal(ctx, id, req.Reason, req.Force)
		if !ok {
			return
		}
		b, _ := json.Marshal(out)
		respond(b)
	}()
}
