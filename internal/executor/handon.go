package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	spearrt "github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/store"
	"github.com/spear-go/spear/internal/task"
)

// The running side of a direct hand-off (see handoff.go): a run another
// node handed to this one runs as a sync run of this node, on its own
// goroutine; what it writes to the store is fenced, as the calling node
// may give it up as lost and have it run again.

// errCallerGone stops a handed-on run whose calling node stopped
// listening: its caller left (CALLER_CANCELLED, as for a local sync run),
// or it gave the run up as lost.
var errCallerGone = fmt.Errorf("the calling node stopped waiting: %w", context.Canceled)

// run runs a run another node handed to this one and sends that
// node its chunks and final record, saying it is alive every aliveEvery;
// the run stops once that node stopped listening.
func (m *offers) run(o *store.RunOffer, req handoffRequest, t *task.Task, art spearrt.Artifact, rt spearrt.Runtime) {
	ctx, cancel := context.WithCancelCause(m.baseCtx)
	defer cancel(nil)
	go m.keepCaller(ctx, o, cancel)
	var onChunk func(Chunk)
	if req.Stream {
		onChunk = func(c Chunk) { m.sendChunk(ctx, o, c, cancel) }
	}
	k := keeper{handedOn: true, keep: func(ctx context.Context, l *live) { m.keepFinal(ctx, o, l) }}
	if _, err := m.runs.runHere(ctx, req.Spec, t, art, rt, onChunk, k); err != nil {
		_ = o.Send(store.HandoffFailed, 0, []byte(err.Error()))
	}
}

// keepCaller says the run is alive every aliveEvery until ctx ends, and
// stops it when the calling node no longer listens.
func (m *offers) keepCaller(ctx context.Context, o *store.RunOffer, stop context.CancelCauseFunc) {
	t := time.NewTicker(aliveEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if m.callerGone(ctx, o) {
			stop(errCallerGone)
			return
		}
	}
}

// callerGone sends an alive message and reports whether nobody listened;
// a late answer (the calling node is busy relaying) is not gone.
func (m *offers) callerGone(ctx context.Context, o *store.RunOffer) bool {
	actx, cancel := context.WithTimeout(ctx, silentLost)
	defer cancel()
	return errors.Is(o.Alive(actx), store.ErrNoRunner)
}

// sendChunk sends one chunk to the calling node; every creditEvery chunks
// it waits until that node relayed what it was sent (the answer to an
// alive message, which follows them), so a slow caller slows the
// function down rather than fill memory.
func (m *offers) sendChunk(ctx context.Context, o *store.RunOffer, c Chunk, stop context.CancelCauseFunc) {
	if ctx.Err() != nil {
		return
	}
	_ = o.Send(store.HandoffChunk, c.Seq, c.Data)
	if (c.Seq+1)%creditEvery != 0 {
		return
	}
	for ctx.Err() == nil {
		actx, cancel := context.WithTimeout(ctx, silentLost)
		err := o.Alive(actx)
		cancel()
		if err == nil {
			return
		}
		if errors.Is(err, store.ErrNoRunner) {
			stop(errCallerGone)
			return
		}
	}
}

// keepFinal sends a handed-on run's final record to the calling node,
// then stores it (fenced); a record too large for a message is stored
// first and the calling node reads it.
func (m *offers) keepFinal(ctx context.Context, o *store.RunOffer, l *live) {
	defer m.lives.forget(l.final().ID)
	b, err := json.Marshal(l.final())
	if err == nil && len(b) <= m.store.Sizes().Payload-4096 && o.Send(store.HandoffFinal, 0, b) == nil {
		m.storeFinal(ctx, l)
		return
	}
	m.storeFinal(ctx, l)
	_ = o.Send(store.HandoffFinal, 0, nil)
}

// storeFinal stores a handed-on run's final record: created when this
// node stored nothing yet, else by compare-and-set on what it stored. A
// record that changed meanwhile means the calling node gave the run up
// as lost and had it run again: nothing is written ("fenced").
func (m *offers) storeFinal(ctx context.Context, l *live) {
	ctx = context.WithoutCancel(ctx)
	rec := l.final()
	l.mu.Lock()
	rev := l.claimed
	l.mu.Unlock()
	err := storeBackoff.Do(ctx, 20, func(int) error {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var err error
		if rev == 0 {
			_, err = m.store.Records.Create(wctx, rec)
		} else {
			_, err = m.store.Records.Update(wctx, rec, rev)
		}
		if errors.Is(err, errdefs.ErrAlreadyExists) || errors.Is(err, errdefs.ErrFailedPrecondition) {
			m.log.Warn("fenced: the node that handed this run on gave it up as lost; its result is dropped", "execution", rec.ID)
			return nil
		}
		return err
	})
	if err != nil {
		m.log.Error("storing a handed-on execution's record", "execution", rec.ID, "err", err)
	}
}
