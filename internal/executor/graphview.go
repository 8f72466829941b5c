package executor

import (
	"context"
	"errors"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
)

// WaitGraph blocks until graph id ends or ctx does, and returns its
// latest record, following the record's changes as they are stored.
func (m *Graphs) WaitGraph(ctx context.Context, id string) (*execution.Record, error) {
	return m.waitFor(ctx, id, func(r *execution.Record) bool { return r.Status.Terminal() })
}

// waitFor follows graph id's record until done says so or ctx ends.
func (m *Graphs) waitFor(ctx context.Context, id string, done func(*execution.Record) bool) (*execution.Record, error) {
	changes, stop, err := m.store.Records.Changes(id)
	if err != nil {
		return nil, err
	}
	defer stop()
	rec, _, err := m.store.Records.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	for !done(rec) {
		select {
		case <-ctx.Done():
			return rec, nil
		case r, ok := <-changes:
			if !ok {
				return m.views.Wait(ctx, id) // the subscription ended: poll
			}
			if r != nil && r.ID == id {
				rec = r
			}
		}
	}
	return rec, nil
}

// attachGraph follows a graph's output: its output step's, once that
// step started, then the graph's end. It returns the graph's final
// record.
func (m *Graphs) attachGraph(ctx context.Context, rec *execution.Record, send func(Chunk) error) (*execution.Record, error) {
	out := indexOfStep(rec.Graph, rec.Graph.Output)
	rec, err := m.waitFor(ctx, rec.ID, func(r *execution.Record) bool {
		return r.Status.Terminal() || r.Graph.States[out].Started()
	})
	if err != nil || ctx.Err() != nil {
		return rec, err
	}
	if st := rec.Graph.States[out]; st.Started() && (!rec.Status.Terminal() || rec.Status == execution.StatusCompleted) {
		if _, err := m.views.Attach(ctx, st.ExecID, send); err != nil {
			return rec, err
		}
	}
	return m.WaitGraph(ctx, rec.ID)
}

// Steps returns the records of graph id's steps that started, in the
// graph's order.
func (m *Graphs) Steps(ctx context.Context, id string) ([]*execution.Record, error) {
	rec, err := m.views.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if rec.Graph == nil {
		return nil, errdefs.NotAGraph.New("execution %q is not a graph: only a graph has steps", id)
	}
	var out []*execution.Record
	for _, st := range rec.Graph.States {
		if !st.Started() || st.ExecID == "-" {
			continue
		}
		r, err := m.views.Get(ctx, st.ExecID)
		if errors.Is(err, errdefs.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}
