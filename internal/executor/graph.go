package executor

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/graph"
	"github.com/spear-go/spear/internal/retry"
	"github.com/spear-go/spear/internal/store"
)

// GraphTask is the task id graph executions are listed under.
const GraphTask = "_graph"

// maxInlineGraphInput is the largest graph input its record keeps; a
// larger one is stored apart (store.Inputs).
const maxInlineGraphInput = 64 << 10

// StartGraph accepts a graph execution: its root steps are queued as
// child executions, then its record is created RUNNING. Nothing
// coordinates it afterwards: each step's end advances the graph (see
// advance) before its queue message is acked, so a crash anywhere is
// repaired by the message's redelivery. rec is the graph's record as the
// caller built it (Graph validated, its steps' runtimes resolved); an
// existing one with its id is returned with existing true when
// idempotent, else EXECUTION_EXISTS.
func (m *Graphs) StartGraph(ctx context.Context, rec *execution.Record, idempotent bool) (*execution.Record, time.Duration, bool, error) {
	if old, _, err := m.store.Records.Get(ctx, rec.ID); err == nil {
		if !idempotent {
			return nil, 0, false, executionExists(rec.ID)
		}
		return old, m.graphEstimate(ctx, old.Graph), true, nil
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return nil, 0, false, err
	}
	if err := m.store.AdmitWork(); err != nil {
		return nil, 0, false, err
	}
	g := rec.Graph
	if len(g.Input) > maxInlineGraphInput {
		// Kept apart, for the root steps of a requeue.
		ref, err := m.store.Inputs.Put(ctx, rec.ID, g.Input)
		if err != nil {
			return nil, 0, false, err
		}
		g.Input, g.InputRef = nil, ref
	}
	g.States = make([]execution.StepState, len(g.Steps))
	rec.Status, rec.StartedAt, rec.Attempts = execution.StatusRunning, rec.CreatedAt, 1
	for _, i := range graph.Next(g, m.opts.Now()).Start {
		if err := m.startStep(ctx, rec, i); err != nil {
			return nil, 0, false, err
		}
	}
	estimate := m.graphEstimate(ctx, g)
	rec.EstimatedMs = max(1, estimate.Milliseconds())
	if _, err := m.store.Records.Create(ctx, rec); err != nil {
		if errors.Is(err, errdefs.ErrAlreadyExists) && idempotent { // a submission with the same key won
			old, _, gerr := m.store.Records.GetLatest(ctx, rec.ID)
			return old, estimate, true, gerr
		}
		m.cancelSteps(rec, "the graph could not be recorded")
		return nil, 0, false, err
	}
	return rec, estimate, false, nil
}

// startStep queues step i's execution (idempotent: its id is derived from
// the graph's and the step's) and records it in the graph's state.
func (m *Graphs) startStep(ctx context.Context, rec *execution.Record, i int) error {
	g, s := rec.Graph, &rec.Graph.Steps[i]
	env := maps.Clone(g.Env)
	if len(s.Env) > 0 {
		if env == nil {
			env = map[string]string{}
		}
		maps.Copy(env, s.Env)
	}
	spec := &execution.Spec{
		ExecutionID: execution.StepExecutionID(rec.ID, s.ID), TaskID: s.TaskID, Runtime: s.Runtime,
		Mode: execution.ModeAsync, Env: env, TimeoutMs: s.TimeoutMs, MaxRetries: s.MaxRetries,
		Priority: rec.Priority, CreatedAt: m.opts.Now(), Idempotent: true,
		ParentID: rec.ID, StepID: s.ID, Deadline: g.Deadline, StreamsTo: graph.StreamsTo(g, i),
	}
	spec.LiveOutput = spec.StreamsTo || rec.Mode == execution.ModeStream && s.ID == g.Output
	switch {
	case s.HasInput:
		spec.Input = s.Input
	case len(s.DependsOn) == 0:
		spec.Input, spec.InputRef = g.Input, g.InputRef
	default:
		spec.Upstream = upstreamOf(g, s)
	}
	// Its record is created only if absent and its queue message is
	// de-duplicated by id: starting a step again (an advance retried)
	// queues nothing new, and a message queued again after the
	// de-duplication window finds the record ended and only advances the
	// graph.
	if err := m.store.AdmitWork(); err != nil {
		return err
	}
	if g.Requeues > 0 {
		return m.restartStep(ctx, g, i, spec)
	}
	if err := m.store.Queue.Submit(ctx, spec, execution.NewRecord(spec)); err != nil {
		return err
	}
	g.States[i] = execution.StepState{Status: execution.StatusPending, ExecID: spec.ExecutionID}
	return nil
}

// upstreamOf lists step s's parents and how each ended.
func upstreamOf(g *execution.Graph, s *execution.Step) []execution.Upstream {
	ups := make([]execution.Upstream, 0, len(s.DependsOn))
	for _, d := range s.DependsOn {
		for j := range g.Steps {
			if g.Steps[j].ID != d {
				continue
			}
			st := g.States[j]
			ups = append(ups, execution.Upstream{Step: d, ExecID: st.ExecID,
				Failed: graph.FailedStep(st), ErrorCode: st.ErrorCode, ErrorMessage: st.ErrorMessage})
		}
	}
	return ups
}

// graphEstimate is the graph's critical path, each step taking what one
// async execution of its task is estimated to take now.
func (m *Graphs) graphEstimate(ctx context.Context, g *execution.Graph) time.Duration {
	if g == nil {
		return 0
	}
	return graph.CriticalPath(g.Steps, func(s *execution.Step) time.Duration {
		t, err := m.registry.Get(ctx, s.TaskID)
		if err != nil {
			return 0
		}
		return m.async.estimate(ctx, t, store.Band(0), false)
	})
}

// stepEnded advances the graph of a step's execution that reached its
// terminal state rec. false: the graph could not be advanced now; the
// step's queue message must not be acked (its redelivery tries again).
func (m *Graphs) stepEnded(rec *execution.Record) bool {
	if rec.ParentID == "" {
		return true
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(m.baseCtx), 30*time.Second)
	defer cancel()
	err := graphBackoff.Do(ctx, 6, func(int) error {
		err := m.advance(ctx, rec.ParentID, rec)
		if errors.Is(err, errdefs.ErrNotFound) && m.opts.Now().Sub(rec.CreatedAt) > time.Minute {
			// Its graph was never recorded (its node died accepting
			// it): nothing waits for this step.
			return retry.Permanent(nil)
		}
		return err
	})
	if err != nil {
		m.log.Warn("advancing a graph; its step's end is retried", "graph", rec.ParentID, "step", rec.StepID, "err", err)
		return false
	}
	return true
}

// graphBackoff spaces the tries of advancing a graph (a record changed
// under it, or its record not written yet).
var graphBackoff = retry.Backoff{Base: 20 * time.Millisecond, Max: 2 * time.Second}

// advance brings graph id's record up to date with its steps' records
// (ended, the one that just ended) and does what that decides: start the
// steps whose parents ended, skip or cancel steps once it failed, end it.
// Every write is a compare-and-set on the record read; a conflict reads
// it again, and starting a step twice starts it once.
func (m *Graphs) advance(ctx context.Context, id string, ended *execution.Record) error {
	var started []string // steps this advance queued
	lag := behindFirstWait
	for range 50 {
		rec, rev, err := m.graphRecord(ctx, id)
		if err != nil {
			return err
		}
		if rec.Graph == nil {
			return nil
		}
		if err := behind(rec, ended); err != nil {
			m.recent.forget(id) // read it from the store next time
			if lag > behindMaxWait {
				return err // stepEnded tries again later
			}
			time.Sleep(lag) // the advance that queued the step is storing the graph
			lag *= 2
			continue
		}
		if rec.Status.Terminal() && len(started) > 0 {
			// It ended (cancelled, say) while this advance queued steps
			// its record never listed: they must not run.
			m.cancelIDs(started, "the graph ended")
			started = nil
		}
		kids, changed, err := m.refresh(ctx, rec, ended)
		if err != nil {
			return err
		}
		var p graph.Plan
		if !rec.Status.Terminal() {
			p = graph.Next(rec.Graph, m.opts.Now())
			if err := m.apply(ctx, rec, kids, p); err != nil {
				return err
			}
			for _, i := range p.Start {
				started = append(started, rec.Graph.States[i].ExecID)
			}
			changed = changed || len(p.Start) > 0 || len(p.Skip) > 0 || p.Outcome != nil
		}
		if !changed {
			return nil
		}
		n, err := m.store.Records.Update(ctx, rec, rev)
		if err != nil {
			m.recent.forget(id)
			if errors.Is(err, errdefs.ErrFailedPrecondition) {
				continue
			}
			return err
		}
		m.recent.remember(rec, n)
		m.afterAdvance(rec, p)
		return nil
	}
	return fmt.Errorf("graph %q kept changing: %w", id, errdefs.ErrUnavailable)
}

// behindFirstWait and behindMaxWait space the reads of a graph's record
// that does not list yet the step reporting to it (see behind): its
// write is a store round trip away.
const (
	behindFirstWait = 500 * time.Microsecond
	behindMaxWait   = 16 * time.Millisecond
)

// behind reports an error when graph rec does not yet list as started the
// step whose record is ended: the advance that started it queued the step
// before storing the graph's record, and the step ran and ended (or
// started) first. Without the error that report would change nothing and
// be taken as done, and the graph would wait for the step for good; with
// it, stepEnded reads the graph again.
func behind(rec *execution.Record, ended *execution.Record) error {
	if ended == nil || rec.Status.Terminal() {
		return nil
	}
	i := indexOfStep(rec.Graph, ended.StepID)
	if i < 0 {
		return nil
	}
	if st := rec.Graph.States[i]; !st.Started() && !st.Status.Terminal() {
		return fmt.Errorf("graph %q does not list step %s as started yet: %w", rec.ID, ended.StepID, errdefs.ErrUnavailable)
	}
	return nil
}

// refresh updates the graph's step states from their records: that of
// the step whose change advances the graph (ended), which is all that
// changed (each step's start and end advance the graph themselves), and
// the output step's; without ended, every step the graph last saw
// unfinished. It returns the records read, by step index, and whether a
// state changed.
func (m *Graphs) refresh(ctx context.Context, rec *execution.Record, ended *execution.Record) (map[int]*execution.Record, bool, error) {
	kids := map[int]*execution.Record{}
	changed := false
	for i, st := range rec.Graph.States {
		mine := ended != nil && ended.ID == st.ExecID
		if !st.Started() || !mine && (ended != nil || st.Status.Terminal()) {
			continue
		}
		kid := ended
		if !mine {
			var err error
			if kid, _, err = m.store.Records.GetLatest(ctx, st.ExecID); errors.Is(err, errdefs.ErrNotFound) {
				continue // queued, its record not written yet
			} else if err != nil {
				return nil, false, err
			}
		}
		kids[i] = kid
		if st.Status.Terminal() && !kid.Status.Terminal() || kid.Attempts < st.Attempts || st.Base > 0 && kid.Attempts <= st.Base {
			continue // a late report of a step the graph saw further on
		}
		next := execution.StepState{Status: kid.Status, ExecID: kid.ID, Attempts: kid.Attempts, ErrorCode: kid.ErrorCode, ErrorMessage: kid.ErrorMessage, Base: st.Base}
		if next != st {
			rec.Graph.States[i], changed = next, true
		}
	}
	return kids, changed, nil
}

// apply does plan p on the graph's record: starts steps, skips steps and
// ends the graph (cancels are sent once the record is stored).
func (m *Graphs) apply(ctx context.Context, rec *execution.Record, kids map[int]*execution.Record, p graph.Plan) error {
	for _, i := range p.Start {
		err := m.startStep(ctx, rec, i)
		if errors.Is(err, errdefs.ErrNotFound) || errors.Is(err, errdefs.ErrFailedPrecondition) || errors.Is(err, errdefs.ErrInvalidArgument) {
			// It can never start (its task was deleted, say): it fails,
			// and the graph with it on the next advance.
			rec.Graph.States[i] = execution.StepState{Status: execution.StatusFailed, ExecID: "-",
				ErrorCode: errdefs.CodeOf(err), ErrorMessage: err.Error()}
			continue
		}
		if err != nil {
			return err
		}
	}
	why := "the graph failed"
	if p.Outcome != nil && p.Outcome.Status == execution.StatusTimeout {
		why = "the graph's deadline passed"
	}
	for _, i := range p.Skip {
		rec.Graph.States[i] = graph.Skipped(why)
	}
	if p.Outcome != nil {
		if i := p.Outcome.Step; i >= 0 && kids[i] == nil && p.Outcome.Status == execution.StatusCompleted {
			out, _, err := m.store.Records.GetLatest(ctx, rec.Graph.States[i].ExecID)
			if err != nil {
				return err
			}
			kids[i] = out
		}
		m.endGraph(rec, p.Outcome, kids)
	}
	return nil
}

// endGraph gives the graph's record its outcome; a completed graph's
// output is its output step's.
func (m *Graphs) endGraph(rec *execution.Record, o *graph.Outcome, kids map[int]*execution.Record) {
	rec.Status, rec.ErrorCode, rec.ErrorMessage = o.Status, o.Code, o.Message
	rec.CompletedAt = m.opts.Now()
	rec.DurationMs = rec.CompletedAt.Sub(rec.StartedAt).Milliseconds()
	if out := kids[o.Step]; o.Status == execution.StatusCompleted && out != nil {
		rec.Output, rec.OutputSize, rec.OutputSHA256 = out.Output, out.OutputSize, out.OutputSHA256
		rec.OutputStored, rec.OutputOf, rec.ExitCode = out.OutputStored, out.ID, out.ExitCode
	}
}

// afterAdvance does what a stored advance decided beyond the record:
// cancels running steps, and reports a graph's end.
func (m *Graphs) afterAdvance(rec *execution.Record, p graph.Plan) {
	why := "the graph failed (fail_fast)"
	if p.Outcome != nil && p.Outcome.Status == execution.StatusTimeout {
		why = "the graph's deadline passed"
	}
	ids := make([]string, 0, len(p.Cancel))
	for _, i := range p.Cancel {
		ids = append(ids, rec.Graph.States[i].ExecID)
	}
	m.cancelIDs(ids, why)
	if p.Outcome != nil {
		m.outbox.notify(rec)
	}
}

func indexOfStep(g *execution.Graph, id string) int {
	for i := range g.Steps {
		if g.Steps[i].ID == id {
			return i
		}
	}
	return -1
}

// cancelIDs cancels the executions ids in the background.
func (m *Graphs) cancelIDs(ids []string, why string) {
	for _, id := range ids {
		m.wg.Go(func() {
			ctx, cancel := context.WithTimeout(m.baseCtx, 10*time.Second)
			defer cancel()
			_, _ = m.cancels.Cancel(ctx, id, why, true)
		})
	}
}

// graphRecord is graph id's record and revision: as this node last wrote
// it, when it did (the steps of a graph mostly run where it started), else
// read from the stream's leader. A stale one fails the compare-and-set
// and is read again.
func (m *Graphs) graphRecord(ctx context.Context, id string) (*execution.Record, uint64, error) {
	if rec, rev, ok := m.recent.get(id); ok {
		return rec, rev, nil
	}
	return m.store.Records.GetLatest(ctx, id)
}

// recentGraphs are the records of unfinished graphs this node last
// wrote, by id, at most maxRecentGraphs of them.
type recentGraphs struct {
	mu   sync.Mutex
	recs map[string]recentGraph
}

type recentGraph struct {
	rec *execution.Record
	rev uint64
}

const maxRecentGraphs = 1024

func (r *recentGraphs) get(id string) (*execution.Record, uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	g, ok := r.recs[id]
	if !ok {
		return nil, 0, false
	}
	return cloneGraph(g.rec), g.rev, true
}

func (r *recentGraphs) remember(rec *execution.Record, rev uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec.Status.Terminal() {
		delete(r.recs, rec.ID)
		return
	}
	if r.recs == nil {
		r.recs = map[string]recentGraph{}
	}
	if len(r.recs) >= maxRecentGraphs {
		for k := range r.recs { // any one: a missing entry is only a read
			delete(r.recs, k)
			break
		}
	}
	r.recs[rec.ID] = recentGraph{cloneGraph(rec), rev}
}

func (r *recentGraphs) forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.recs, id)
}

// cloneGraph copies a graph's record deep enough for an advance to change
// the copy: its steps are never changed once the graph started.
func cloneGraph(r *execution.Record) *execution.Record {
	c := *r
	g := *r.Graph
	g.States = slices.Clone(g.States)
	c.Graph = &g
	return &c
}
