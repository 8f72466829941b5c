package executor

import (
	"errors"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/testwait"
)

// TestLateClaim: a fresh async execution's first attempt runs before its
// claim is written. While the claim waits, the store shows it PENDING (its
// queue message) and this node RUNNING; once its run outlasts ClaimAfter,
// the store shows it RUNNING here. Either way its final record is created
// once, and the message leaves the queue.
func TestLateClaim(t *testing.T) {
	for _, tc := range []struct {
		name       string
		claimAfter time.Duration
		want       execution.Status // stored while it runs
	}{
		{"deferred", time.Hour, execution.StatusPending},
		{"claimed", time.Millisecond, execution.StatusRunning},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Options{Workers: 1, ClaimAfter: tc.claimAfter}, nil)
			ctx := testCtx(t)
			spec := newSpec("gated", execution.ModeAsync, "in")
			if _, _, _, err := h.m.Async.Submit(ctx, spec); err != nil {
				t.Fatal(err)
			}
			h.rt.waitStarted(t, spec.ExecutionID)
			testwait.Until(t, "the stored status "+tc.want.String(), func() bool {
				r, _, err := h.st.Records.Get(ctx, spec.ExecutionID)
				return err == nil && r.Status == tc.want
			})
			if live := h.m.Live(); len(live) != 1 || live[0].Status != execution.StatusRunning {
				t.Errorf("live here: %+v, want it running", live)
			}
			close(h.rt.gate)
			r := h.stored(spec.ExecutionID)
			if r.Status != execution.StatusCompleted || string(r.Output) != "in" || r.Attempts != 1 || r.Node != h.m.opts.NodeID {
				t.Errorf("final record %+v", r)
			}
			h.gone(spec.ExecutionID)
		})
	}
}

// TestLateClaimRecordedFirst: the record of an execution whose claim
// waits is written by another first (a cancel that found it live nowhere,
// another worker's claim). A run still going when its late claim is
// refused is stopped, fenced; a run that ended before its claim has its
// result dropped. The other's record stays.
func TestLateClaimRecordedFirst(t *testing.T) {
	for _, tc := range []struct {
		name       string
		claimAfter time.Duration
	}{
		{"claim refused", time.Millisecond},
		{"final write refused", time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, unblock := busyWithQuota(t, 0)
			h.m.opts.ClaimAfter = tc.claimAfter
			ctx := testCtx(t)
			spec := newSpec("gated", execution.ModeAsync, "in")
			if _, _, _, err := h.m.Async.Submit(ctx, spec); err != nil {
				t.Fatal(err)
			}
			// Recorded CANCELLED while it waits for the worker, as by a
			// cancel of another node.
			rec := execution.NewRecord(spec)
			rec.Status, rec.CompletedAt = execution.StatusCancelled, time.Now()
			if _, err := h.st.Records.Update(ctx, rec, 0); err != nil {
				t.Fatal(err)
			}
			unblock()
			h.rt.waitStarted(t, spec.ExecutionID)
			if tc.claimAfter == time.Hour {
				close(h.rt.gate)
			}
			testwait.Until(t, "the run to end", func() bool { return len(h.m.Live()) == 0 })
			if cause := h.rt.causeOf(spec.ExecutionID); tc.claimAfter != time.Hour && !errors.Is(cause, errFenced) {
				t.Errorf("the run ended with %v, want it fenced", cause)
			}
			if r, _, err := h.st.Records.Get(ctx, spec.ExecutionID); err != nil || r.Status != execution.StatusCancelled || r.Attempts != 0 {
				t.Fatalf("stored record %+v, %v; want the cancel's", r, err)
			}
		})
	}
}
