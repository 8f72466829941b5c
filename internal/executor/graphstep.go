package executor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/graph"
	"github.com/spear-go/spear/internal/store"
)

// Graphs runs task graphs: a graph is an execution whose steps are child
// executions in the durable queue (graph.go); this file is what a step
// needs beyond an ordinary execution: its input, its graph's end, and
// cancelling the whole graph.
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

// stepInput is a graph step's standard input: its parent's output as it
// is, read as it streams from the store, or the keyed JSON of several
// parents' (graph.Keyed). A parent's output that cannot be read whole,
// or fails its checksum, stops the run with INPUT_UNAVAILABLE.
func (m *Graphs) stepInput(ctx context.Context, l *live, spec *execution.Spec) (io.Reader, func(), error) {
	ups := spec.Upstream
	if graph.Verbatim(ups) {
		pr, pw := io.Pipe()
		watchCtx, stopWatch := context.WithCancel(ctx)
		go m.watchUpstream(watchCtx, l, ups[0].ExecID)
		go func() {
			defer stopWatch()
			err := m.copyOutput(ctx, ups[0], pw)
			if err != nil {
				l.stop(err, true)
			}
			pw.CloseWithError(err)
		}()
		return pr, func() { _ = pr.Close() }, nil
	}
	outs := make([][]byte, len(ups))
	for i, u := range ups {
		if u.Failed {
			continue
		}
		var buf bytes.Buffer
		if err := m.copyOutput(ctx, u, &buf); err != nil {
			return nil, nil, err
		}
		outs[i] = buf.Bytes()
	}
	b, err := graph.Keyed(ups, outs)
	if err != nil {
		return nil, nil, err
	}
	return bytes.NewReader(b), func() {}, nil
}

// copyOutput writes parent u's whole output to w and checks it against
// the sha256 its record holds.
func (m *Graphs) copyOutput(ctx context.Context, u execution.Upstream, w io.Writer) error {
	h := sha256.New()
	next := int64(0)
	send := func(c Chunk) error {
		if c.Seq != next { // the parent's next attempt starts over
			return errdefs.UpstreamRestarted.New("step %q runs again: this step runs again with it", u.Step)
		}
		next++
		h.Write(c.Data)
		_, err := w.Write(c.Data)
		return err
	}
	rec, _, err := m.store.Records.GetLatest(ctx, u.ExecID)
	if err == nil && rec.Status.Terminal() && !rec.OutputStored && rec.OutputSize == int64(len(rec.Output)) {
		err = send(Chunk{Data: rec.Output}) // all of it is in the record
	} else if err == nil {
		rec, err = m.views.Attach(ctx, u.ExecID, send)
	}
	switch {
	case errdefs.UpstreamRestarted.Is(err):
		return err
	case err != nil:
		return errdefs.InputUnavailable.New("reading step %q's output: %v", u.Step, err)
	case rec.Status != execution.StatusCompleted:
		return errdefs.InputUnavailable.New("step %q ended %s", u.Step, rec.Status)
	case rec.OutputDropped:
		return errdefs.InputUnavailable.New("step %q's output was dropped to free space", u.Step)
	case rec.OutputSHA256 != "" && hex.EncodeToString(h.Sum(nil)) != rec.OutputSHA256:
		return errdefs.InputUnavailable.New("step %q's output does not match its sha256 %s", u.Step, rec.OutputSHA256)
	}
	return nil
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

// upstreamRuns reports whether the parent of a streamed step runs now, on
// a live node, or has ended: only then may the step take a run slot,
// where it waits for the parent's output. (A step of one parent that
// ended reads its output whole; other steps do not wait.)
func (m *Graphs) upstreamRuns(ctx context.Context, spec *execution.Spec) bool {
	if !graph.Verbatim(spec.Upstream) {
		return true
	}
	rec, _, err := m.store.Records.GetLatest(ctx, spec.Upstream[0].ExecID)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return false // queued; its record not written yet
	case err != nil:
		return true // the run reports what it cannot read
	}
	return rec.Status.Terminal() || m.runsLive(rec)
}

// runsLive reports whether rec is RUNNING on a node that is alive: live
// here, or on a node the registry lists (a record left RUNNING by a node
// that died is not).
func (m *Graphs) runsLive(rec *execution.Record) bool {
	if rec.Status != execution.StatusRunning {
		return false
	}
	if rec.Node == m.opts.NodeID {
		return m.views.liveOf(rec.ID) != nil
	}
	return m.opts.Peers != nil && slices.ContainsFunc(m.opts.Peers(), func(n store.NodeEntry) bool { return n.ID == rec.Node })
}

// watchUpstream stops a streamed step (UPSTREAM_RESTARTED: it goes back
// to the queue) once its parent's attempt stops without ending: it went
// back to the queue, or its node died. Without it the step would wait in
// its slot for output that does not come.
func (m *Graphs) watchUpstream(ctx context.Context, l *live, parentID string) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	attempt := int32(-1)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rec, _, err := m.store.Records.GetLatest(ctx, parentID)
		switch {
		case err != nil:
			continue
		case rec.Status.Terminal():
			return
		case attempt < 0:
			attempt = rec.Attempts
		}
		if !m.runsLive(rec) || rec.Attempts != attempt {
			l.stop(errdefs.UpstreamRestarted.New("the step this one reads stopped without ending (its node died, or it runs again): this step runs again with it"), true)
			return
		}
	}
}
