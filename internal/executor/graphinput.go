package executor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"slices"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/graph"
	"github.com/spear-go/spear/internal/store"
)

// stepInputs feed graph steps their parents' outputs: as they are
// written for a streamed step, which takes a run slot only while its
// parent runs, and is stopped when its parent starts over.
type stepInputs struct{ *core }

// stepInput is a graph step's standard input: its parent's output as it
// is, read as it streams from the store, or the keyed JSON of several
// parents' (graph.Keyed). A parent's output that cannot be read whole,
// or fails its checksum, stops the run with INPUT_UNAVAILABLE.
func (m *stepInputs) stepInput(ctx context.Context, l *live, spec *execution.Spec) (io.Reader, func(), error) {
	ups := spec.Upstream
	if graph.Verbatim(ups) {
		pr, pw := io.Pipe()
		watchCtx, stopWatch := context.WithCancel(ctx)
		go m.watchUpstream(watchCtx, l, ups[0].ExecID)
		go func() {
			defer stopWatch()
			err := m.copyOutput(ctx, ups[0], pw)
			if err != nil {
				l.failInput(err)
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
func (m *stepInputs) copyOutput(ctx context.Context, u execution.Upstream, w io.Writer) error {
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

// upstreamRuns reports whether the parent of a streamed step runs now, on
// a live node, or has ended: only then may the step take a run slot,
// where it waits for the parent's output. (A step of one parent that
// ended reads its output whole; other steps do not wait.)
func (m *stepInputs) upstreamRuns(ctx context.Context, spec *execution.Spec) bool {
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
func (m *stepInputs) runsLive(rec *execution.Record) bool {
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
func (m *stepInputs) watchUpstream(ctx context.Context, l *live, parentID string) {
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
			l.failInput(errdefs.UpstreamRestarted.New("the step this one reads stopped without ending (its node died, or it runs again): this step runs again with it"))
			return
		}
	}
}
