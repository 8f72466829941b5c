package executor

import (
	"context"
	"errors"
	"testing"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/store"
	"github.com/spear-go/spear/internal/task"
	"github.com/spear-go/spear/internal/testwait"
)

// TestMaxConcurrencyAcrossNodes: two nodes sharing a store, a task with
// max_concurrency 1 running on the first. Work of that task that reaches
// the second node, in every mode, waits there without a slot (parked),
// neither runs nor fails nor counts an attempt, and runs once the first
// run ends: its lease is freed.
func TestMaxConcurrencyAcrossNodes(t *testing.T) {
	for _, mode := range []execution.Mode{execution.ModeSync, execution.ModeStream, execution.ModeAsync} {
		t.Run(mode.String(), func(t *testing.T) {
			h := newHarness(t, Options{Workers: 2, Shared: true, NodeID: "a"}, nil)
			b := h.newManager(Options{Workers: 2, Shared: true, NodeID: "b"})
			ctx := testCtx(t)
			if _, err := h.reg.UpdateLimits(ctx, testTask, task.Limits{MaxConcurrency: 1}); err != nil {
				t.Fatal(err)
			}
			blockCtx, unblock := context.WithCancel(ctx)
			defer unblock()
			blocker := newSpec("sleep", execution.ModeSync, "")
			go func() { _, _ = h.m.Runs.Run(blockCtx, blocker, nil) }()
			h.rt.waitStarted(t, blocker.ExecutionID)

			spec := newSpec("echo", mode, "waited")
			done := make(chan *execution.Record, 1)
			if mode == execution.ModeAsync {
				// Only b takes async work: a's dispatcher would wait for
				// its own slot, which proves nothing. (Draining, a takes
				// no more work; its run goes on.)
				h.m.mu.Lock()
				h.m.draining = true
				h.m.mu.Unlock()
				if _, _, _, err := b.Async.Submit(ctx, spec); err != nil {
					t.Fatal(err)
				}
				go func() { done <- h.wait(b, spec.ExecutionID) }()
			} else {
				go func() {
					rec, err := b.Runs.Run(ctx, spec, nil)
					if err != nil {
						t.Error(err)
					}
					done <- rec
				}()
			}
			testwait.Until(t, "the call to wait at node b without a slot", func() bool {
				free, waiting := b.slots.state()
				b.slots.mu.Lock()
				defer b.slots.mu.Unlock()
				return free == 2 && waiting == 0 && b.slots.waiting[testTask] == 1 // parked
			})
			if n := h.rt.callsOf(spec.ExecutionID); n != 0 {
				t.Fatalf("ran %d times at node b while node a held the task's only lease", n)
			}
			if mode == execution.ModeAsync {
				// Waiting is not an attempt: it is claimed once it runs.
				if r, _, err := h.st.Records.Get(ctx, spec.ExecutionID); err != nil || r.Status != execution.StatusPending || r.Attempts != 0 {
					t.Fatalf("stored record while it waits = %+v, %v; want PENDING, no attempt", r, err)
				}
			}
			unblock()
			rec := recv(t, done, "the waiting execution to finish")
			if rec.Status != execution.StatusCompleted || string(rec.Output) != "waited" || rec.Attempts != 1 {
				t.Fatalf("record = %v %s %q after %d attempts; want COMPLETED, once", rec.Status, rec.ErrorCode, rec.Output, rec.Attempts)
			}
		})
	}
}

// TestLeaseLostStopsRun: a run whose cluster-wide lease cannot be renewed
// (here: the store says it is lost) is stopped, as its lease may be
// another run's: a sync call fails with UNAVAILABLE; an async attempt is
// dropped unrecorded (fenced: it runs again once its message comes back).
// Either way the lease is given back.
func TestLeaseLostStopsRun(t *testing.T) {
	for _, mode := range []execution.Mode{execution.ModeSync, execution.ModeAsync} {
		t.Run(mode.String(), func(t *testing.T) {
			h := newHarness(t, Options{Workers: 2, Shared: true, NodeID: "a"}, nil)
			shutdown(h.m, 0) // runs on m below
			m := h.newManagerWith(Options{Workers: 2, Shared: true, NodeID: "b"}, func(m *Manager) {
				m.renew = func(context.Context, *store.Lease) error { return store.ErrLeaseLost }
			})
			ctx := testCtx(t)
			if _, err := h.reg.UpdateLimits(ctx, testTask, task.Limits{MaxConcurrency: 1}); err != nil {
				t.Fatal(err)
			}
			spec := newSpec("sleep", mode, "")
			if mode == execution.ModeSync {
				rec, err := m.Runs.Run(ctx, spec, nil)
				if err != nil || rec.Status != execution.StatusFailed || rec.ErrorCode != errdefs.Unavailable.String() {
					t.Fatalf("Run = %+v, %v; want FAILED UNAVAILABLE", rec, err)
				}
			} else {
				if _, _, _, err := m.Async.Submit(ctx, spec); err != nil {
					t.Fatal(err)
				}
				testwait.Until(t, "the run to be dropped", func() bool { return m.LiveOfTask(testTask) == 0 && h.rt.causeOf(spec.ExecutionID) != nil })
				if r, _, err := h.st.Records.Get(ctx, spec.ExecutionID); err != nil || r.Status.Terminal() {
					t.Fatalf("stored record = %+v, %v; want it left to the next attempt", r, err)
				}
			}
			if cause := h.rt.causeOf(spec.ExecutionID); !errors.Is(cause, errFenced) {
				t.Fatalf("the run was stopped by %v; want its lost lease", cause)
			}
			if l, err := h.st.Leases.TryAcquire(ctx, testTask, 1, "test"); err != nil || l == nil {
				t.Fatalf("TryAcquire after the run = %v, %v; want its lease given back", l, err)
			}
		})
	}
}

// TestSlotsPark: a parked waiter gave its slot back but keeps its place in
// its task's max_queued, until it comes back (without being checked
// again) or gives up.
func TestSlotsPark(t *testing.T) {
	tests := []struct {
		name string
		back bool // the parked waiter comes back (else it gives up)
	}{
		{"comes back", true},
		{"gives up", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			s := newSlots(1)
			c := claim{task: "a", maxQueued: 1}
			if err := s.acquire(ctx, c); err != nil {
				t.Fatal(err)
			}
			s.park("a")
			if free, waiting := s.state(); free != 1 || waiting != 0 {
				t.Fatalf("after park: %d free, %d waiting; want the slot free and no slot waiter", free, waiting)
			}
			if err := s.acquire(ctx, c); !errors.Is(err, errQueueFull) {
				t.Fatalf("a new waiter while one is parked: %v; want errQueueFull (max_queued 1)", err)
			}
			if tt.back {
				back := c
				back.parked = true
				if err := s.acquire(ctx, back); err != nil {
					t.Fatalf("the parked waiter coming back: %v", err)
				}
				s.release("a")
			} else {
				s.unpark("a")
			}
			if err := s.acquire(ctx, c); err != nil {
				t.Fatalf("a new waiter once the parked one is gone: %v", err)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.waiting["a"] != 0 {
				t.Fatalf("waiting[a] = %d; want 0", s.waiting["a"])
			}
		})
	}
}
