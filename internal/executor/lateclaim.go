package executor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/store"
)

// The first attempt of an execution accepted in one write (its queue
// message its only record: Spec.Unrecorded) starts without writing its
// claim first. Most async functions end well within a store round trip,
// and the claim cost one per execution: two writes (the record RUNNING and
// its index entry), a run slot held for the round trip, and a quarter of
// the node's CPU per async execution (docs/RATIONALE.md). Such a run's
// final record is created, create-only with its index entry, in one write;
// a cancel that recorded the execution first, or another worker's claim,
// makes that write fail, and the result is dropped as a fenced one's. A run
// still going after claimAfter is claimed as any other, RUNNING and
// create-only, while it runs; a refused claim stops it, fenced.
//
// Meanwhile the store shows the execution PENDING (its queue message), and
// this node, where it is live, RUNNING. A cancel reaches the run where it
// is live, as any cancel of a running execution does.

// claimAfter is how long a run goes before its late claim is written
// (Options.ClaimAfter).
const claimAfter = 2 * time.Millisecond

// lateClaim is the deferred claim of one run; its fields are guarded by
// the live execution's mu.
type lateClaim struct {
	timer *time.Timer
	state lateState
	done  chan struct{} // closed when a claim in flight is written or refused
}

type lateState int

const (
	lateWaiting  lateState = iota // the timer is armed
	lateClaiming                  // the claim is being written
	lateClaimed                   // written: live.claimed is its revision
	lateRefused                   // recorded first by another: the run stops, fenced
	lateSkipped                   // the run ended first, or the store failed: the final write creates the record
)

// defers reports whether d's claim may wait: a fresh execution's first
// attempt, not a graph's step (whose claim starts the steps reading it).
func defers(d *store.Delivery, rev uint64) bool {
	s := d.Spec
	return s.Unrecorded && d.Attempt == 1 && rev == 0 && s.ParentID == "" && !s.StreamsTo
}

// deferClaim arms the late claim of l, which runs now; stop stops the run.
func (m *claims) deferClaim(l *live, d *store.Delivery, stop context.CancelCauseFunc) {
	lc := &lateClaim{done: make(chan struct{})}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.late = lc
	after := m.opts.ClaimAfter
	if after <= 0 {
		after = claimAfter
	}
	lc.timer = time.AfterFunc(after, func() { m.claimLate(l, d, stop) })
}

// claimLate writes the claim of a run still going after claimAfter.
func (m *claims) claimLate(l *live, d *store.Delivery, stop context.CancelCauseFunc) {
	l.mu.Lock()
	lc := l.late
	if lc.state != lateWaiting {
		l.mu.Unlock()
		return
	}
	if l.rec.Status != execution.StatusRunning { // its attempt has not begun
		lc.timer.Reset(claimAfter)
		l.mu.Unlock()
		return
	}
	lc.state = lateClaiming
	claim := *l.rec
	l.mu.Unlock()
	rev, err := m.store.Records.Claim(m.baseCtx, &claim, 0)
	l.mu.Lock()
	switch {
	case err == nil:
		lc.state, l.claimed = lateClaimed, rev
	case errors.Is(err, errdefs.ErrFailedPrecondition):
		lc.state = lateRefused
	default: // the store failed: the final write decides
		lc.state = lateSkipped
	}
	close(lc.done)
	refused := lc.state == lateRefused
	l.mu.Unlock()
	if !refused {
		return
	}
	if cur, _, err := m.store.Records.GetLatest(m.baseCtx, claim.ID); err == nil && cur.Status.Terminal() {
		_ = d.Ack(m.baseCtx) // cancelled: nothing is left to run
	}
	stop(fmt.Errorf("%w: a cancel or another worker recorded the execution first", errFenced))
}

// settleLate ends the deferral of l's claim, if it has one, once its run is
// over, waiting for a claim in flight. It reports whether l had one: then
// its records are written fenced, from the late claim's revision or, with
// none, from revision 0 — created only if nobody else did (a refused claim
// is refused again there).
func (m *claims) settleLate(l *live) bool {
	l.mu.Lock()
	lc := l.late
	if lc == nil {
		l.mu.Unlock()
		return false
	}
	if lc.state == lateWaiting {
		lc.timer.Stop() // if it fired, claimLate finds the claim settled
		lc.state = lateSkipped
		close(lc.done)
	}
	l.mu.Unlock()
	<-lc.done
	return true
}
