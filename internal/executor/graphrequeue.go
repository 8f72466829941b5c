package executor

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
)

// RequeueGraph runs a graph that failed, timed out or was cancelled
// again: its completed steps stay as they are, the others run again (each
// with its retries anew), under a new deadline of the graph's timeout.
func (m *Graphs) RequeueGraph(ctx context.Context, rec *execution.Record, rev uint64) (*execution.Record, error) {
	for range 20 {
		switch rec.Status {
		case execution.StatusFailed, execution.StatusTimeout, execution.StatusCancelled:
		default:
			return nil, errdefs.NotDeadLettered.New("graph %q is %s: only a graph that failed, timed out or was cancelled can be requeued", rec.ID, rec.Status)
		}
		g := rec.Graph
		if n := stopping(g); n > 0 {
			return nil, errdefs.GraphStopping.New("graph %q ended, but %d of its steps are still stopping: try again in a moment", rec.ID, n)
		}
		resetUnfinished(g)
		g.Requeues++
		now := m.opts.Now()
		if g.TimeoutMs > 0 {
			g.Deadline = now.Add(time.Duration(g.TimeoutMs) * time.Millisecond)
		}
		rec.Status, rec.ErrorCode, rec.ErrorMessage, rec.CompletedAt = execution.StatusRunning, "", "", time.Time{}
		rec.Output, rec.OutputSize, rec.OutputSHA256, rec.OutputStored, rec.OutputOf = nil, 0, "", false, ""
		rec.StartedAt, rec.DurationMs, rec.ExitCode = now, 0, -1
		rec.Attempts++
		_, err := m.store.Records.Update(ctx, rec, rev)
		if err == nil {
			m.recent.forget(rec.ID)
			return rec, m.advance(ctx, rec.ID, nil)
		}
		if !errors.Is(err, errdefs.ErrFailedPrecondition) {
			return nil, err
		}
		if rec, rev, err = m.store.Records.GetLatest(ctx, rec.ID); err != nil {
			return nil, err
		}
	}
	return nil, errdefs.Unavailable.New("graph %q kept changing while requeueing it", rec.ID)
}

// restartStep queues step i of a requeued graph: its execution from an
// earlier run is set PENDING again (by compare-and-set) with its retries
// anew, and queued under the graph's requeue generation; a step that
// never ran is queued as new.
func (m *Graphs) restartStep(ctx context.Context, g *execution.Graph, i int, spec *execution.Spec) error {
	spec.Requeues = g.Requeues
	old, rev, err := m.store.Records.GetLatest(ctx, spec.ExecutionID)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		if err := m.store.Queue.Submit(ctx, spec, execution.NewRecord(spec)); err != nil {
			return err
		}
		g.States[i] = execution.StepState{Status: execution.StatusPending, ExecID: spec.ExecutionID}
		return nil
	case err != nil:
		return err
	case !old.Status.Terminal(): // set PENDING and queued by this requeue, in an advance repeated
		g.States[i] = execution.StepState{Status: old.Status, ExecID: old.ID, Attempts: old.Attempts, Base: old.Attempts}
		return nil
	}
	spec.AttemptBase = old.Attempts
	old.Status, old.ErrorCode, old.ErrorMessage, old.CompletedAt = execution.StatusPending, "", "", time.Time{}
	old.Output, old.OutputSize, old.OutputSHA256, old.OutputStored = nil, 0, "", false
	old.DeadLettered, old.Spec = false, nil
	if _, err := m.store.Records.Update(ctx, old, rev); err != nil {
		return err
	}
	if _, err := m.store.Queue.Enqueue(ctx, spec); err != nil {
		return err
	}
	g.States[i] = execution.StepState{Status: execution.StatusPending, ExecID: spec.ExecutionID, Attempts: old.Attempts, Base: old.Attempts}
	return nil
}

// resetUnfinished clears the state of every step that did not complete,
// and of every step downstream of one: a step's result stands only while
// the outputs it read do.
func resetUnfinished(g *execution.Graph) {
	reset := make(map[string]bool, len(g.Steps))
	for changed := true; changed; {
		changed = false
		for i, s := range g.Steps {
			if reset[s.ID] || g.States[i].Status == execution.StatusCompleted && !slices.ContainsFunc(s.DependsOn, func(d string) bool { return reset[d] }) {
				continue
			}
			reset[s.ID], changed = true, true
			g.States[i] = execution.StepState{}
		}
	}
}

// stopping counts the steps of an ended graph that were started and have
// not ended yet (cancelled, still stopping).
func stopping(g *execution.Graph) int {
	n := 0
	for _, st := range g.States {
		if st.Started() && !st.Status.Terminal() {
			n++
		}
	}
	return n
}
