package executor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/graph"
)

// Graphs runs task graphs: a graph is an execution whose steps are child
// executions in the durable queue, advanced as each step starts and ends
// (graph.go); this file cancels a graph, and advances it as a step
// starts; graphview.go waits for and follows one; stepInputs
// (graphinput.go) feed its steps.
type Graphs struct {
	*core
	// recent are the graph records this node last wrote.
	recent recentGraphs
}

// pastDeadline reports whether a step's graph deadline passed: the step
// is not retried.
func pastDeadline(spec *execution.Spec, now time.Time) bool {
	return !spec.Deadline.IsZero() && !now.Before(spec.Deadline)
}

// CancelGraph ends a graph CANCELLED: its steps not started never start,
// its running steps are stopped and waited for.
func (m *Graphs) CancelGraph(ctx context.Context, rec *execution.Record, rev uint64, reason string) (CancelOutcome, error) {
	for range 20 {
		if rec.Status.Terminal() {
			return finished(rec.Status), nil
		}
		for i, st := range rec.Graph.States {
			if !st.Started() && st.Status == execution.StatusUnknown {
				rec.Graph.States[i] = graph.Skipped("the graph was cancelled")
			}
		}
		rec.Status, rec.ErrorCode, rec.ErrorMessage = execution.StatusCancelled, errdefs.Cancelled.String(), cancelCause(reason).Error()
		rec.CompletedAt = m.opts.Now()
		rec.DurationMs = rec.CompletedAt.Sub(rec.StartedAt).Milliseconds()
		_, err := m.store.Records.Update(ctx, rec, rev)
		if err == nil {
			break
		}
		if !errors.Is(err, errdefs.ErrFailedPrecondition) {
			return CancelOutcome{}, err
		}
		if rec, rev, err = m.store.Records.GetLatest(ctx, rec.ID); err != nil {
			return CancelOutcome{}, err
		}
	}
	if !rec.Status.Terminal() {
		return CancelOutcome{}, fmt.Errorf("graph %q kept changing while cancelling: %w", rec.ID, errdefs.ErrUnavailable)
	}
	n := m.cancelSteps(rec, "the graph was cancelled")
	if err := m.advance(ctx, rec.ID, nil); err != nil {
		m.log.Warn("recording a cancelled graph's steps", "graph", rec.ID, "err", err)
	}
	m.outbox.notify(rec)
	return CancelOutcome{Cancelled: true, Status: execution.StatusCancelled, Message: fmt.Sprintf("cancelled; %d steps stopped", n)}, nil
}

// cancelSteps cancels every started step of the graph that has not ended,
// at once, and waits for them; it returns how many were cancelled.
func (m *Graphs) cancelSteps(rec *execution.Record, why string) int {
	var wg sync.WaitGroup
	n := 0
	for _, st := range rec.Graph.States {
		if !st.Started() || st.Status.Terminal() {
			continue
		}
		n++
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(m.baseCtx, 10*time.Second)
			defer cancel()
			if _, err := m.cancels.Cancel(ctx, st.ExecID, why, true); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
				m.log.Warn("cancelling a graph's step", "graph", rec.ID, "execution", st.ExecID, "err", err)
			}
		})
	}
	wg.Wait()
	return n
}

// stepStarted advances the graph of a step that streams to others, which
// start as it runs (best effort: without it they start when it ends).
func (m *Graphs) stepStarted(rec *execution.Record) {
	ctx, cancel := context.WithTimeout(m.baseCtx, 30*time.Second)
	defer cancel()
	// A root step may start before its graph's record is written.
	err := graphBackoff.Do(ctx, 5, func(int) error { return m.advance(ctx, rec.ParentID, rec) })
	if err != nil {
		m.log.Warn("starting a step's streamed dependents", "graph", rec.ParentID, "step", rec.StepID, "err", err)
	}
}
