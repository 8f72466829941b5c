package executor

import (
	"errors"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
)

// TestKeyedSubmitCrash: a node that dies between a keyed submission's queue
// message and its record (injected: the submission stops there) loses
// nothing: the next node runs the execution exactly once, and the same key
// or id afterwards finds that execution.
func TestKeyedSubmitCrash(t *testing.T) {
	tests := []struct {
		name  string
		keyed func(*execution.Spec)
	}{
		{"idempotency key", func(s *execution.Spec) { s.ExecutionID, s.Idempotent = execution.IdempotentID(testTask, "k1"), true }},
		{"caller-given id", func(s *execution.Spec) { s.ExecutionID, s.IDGiven = "given-id-1", true }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Options{Workers: 1}, nil)
			ctx := testCtx(t)
			shutdown(h.m, time.Second) // the node that crashes takes no work
			crashing := New(Options{Workers: 1, NodeID: "node-crash"}, h.st, h.reg, h.m.runtimes)
			crashing.afterEnqueue = func() error { return errors.New("killed") }
			spec := newSpec("echo", execution.ModeAsync, "once")
			tc.keyed(spec)
			if _, _, _, err := crashing.Async.Submit(ctx, spec); err == nil || err.Error() != "killed" {
				t.Fatalf("Submit with the injected crash = %v", err)
			}
			// Queued, with no record stored yet: the queue message is its
			// record (PENDING, revision 0).
			if r, rev, err := h.st.Records.Get(ctx, spec.ExecutionID); err != nil || rev != 0 || r.Status != execution.StatusPending {
				t.Fatalf("before the crash point: %v at revision %d, %v; want it queued with no record stored", r, rev, err)
			}
			restarted := h.newManager(Options{Workers: 1})
			if r := h.stored(spec.ExecutionID); r.Status != execution.StatusCompleted || string(r.Output) != "once" {
				t.Fatalf("after the restart: %v %s %q", r.Status, r.ErrorMessage, r.Output)
			}
			again := *spec
			rec, _, existing, err := restarted.Async.Submit(ctx, &again)
			switch {
			case spec.Idempotent && (err != nil || !existing || rec.Status != execution.StatusCompleted):
				t.Fatalf("the same key again = %v, existing %v, %v; want the completed execution", rec, existing, err)
			case spec.IDGiven && errdefs.CodeOf(err) != "EXECUTION_EXISTS":
				t.Fatalf("the same id again = %v; want EXECUTION_EXISTS", err)
			}
			h.gone(spec.ExecutionID)
			if n := h.rt.callsOf(spec.ExecutionID); n != 1 {
				t.Fatalf("the function ran %d times, want once", n)
			}
		})
	}
}

// TestSyncRefusesExistingID: a sync run naming an existing execution's id
// is refused with EXECUTION_EXISTS and leaves that execution's record as
// it was.
func TestSyncRefusesExistingID(t *testing.T) {
	h := newHarness(t, Options{Workers: 1}, nil)
	ctx := testCtx(t)
	first := newSpec("echo", execution.ModeAsync, "original")
	first.IDGiven = true
	if _, _, _, err := h.m.Async.Submit(ctx, first); err != nil {
		t.Fatal(err)
	}
	before := h.stored(first.ExecutionID)
	for _, mode := range []execution.Mode{execution.ModeSync, execution.ModeStream} {
		spec := newSpec("echo", mode, "replacement")
		spec.ExecutionID, spec.IDGiven = first.ExecutionID, true
		if _, err := h.m.Runs.Run(ctx, spec, nil); errdefs.CodeOf(err) != "EXECUTION_EXISTS" {
			t.Fatalf("%v run with an existing id = %v, want EXECUTION_EXISTS", mode, err)
		}
	}
	after := h.stored(first.ExecutionID)
	if string(after.Output) != "original" || after.Mode != execution.ModeAsync || !after.CompletedAt.Equal(before.CompletedAt) {
		t.Fatalf("record changed: %+v", after)
	}
}
