package executor

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/spear-go/spear/internal/execution"
	spearrt "github.com/spear-go/spear/internal/runtime"
)

// sparingRuntime is the fake runtime with spares: Reserve hands out ids
// "spare-1", "spare-2"... for invocations without an environment.
type sparingRuntime struct {
	*fakeRuntime
	mu       sync.Mutex
	n        int
	asked    []*spearrt.Invocation
	released []string
}

func (s *sparingRuntime) Reserve(inv *spearrt.Invocation) (string, func(), bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked = append(s.asked, inv)
	if len(inv.Env) > 0 {
		return "", nil, false
	}
	s.n++
	id := fmt.Sprintf("spare-%d", s.n)
	return id, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.released = append(s.released, id)
	}, true
}

func (s *sparingRuntime) Spares() spearrt.SpareCounts { return spearrt.SpareCounts{} }

// TestRunTakesSpare: a sync run whose id nobody has seen runs as the id of
// the spare its runtime started ahead, and releases it once over; a run
// whose caller named its id, or that was announced (stream), does not ask.
func TestRunTakesSpare(t *testing.T) {
	h := newHarness(t, Options{Workers: 2}, nil)
	rt := &sparingRuntime{fakeRuntime: h.rt}
	m := h.newManagerWith(Options{Workers: 2}, func(m *Manager) {
		m.runtimes[spearrt.TypeProcess] = rt
	})
	spec := newSpec("echo", execution.ModeSync, "hi")
	spec.IDUnseen = true
	rec, err := m.Runs.Run(testCtx(t), spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rec.ID != "spare-1" || rec.Status != execution.StatusCompleted || string(rec.Output) != "hi" {
		t.Fatalf("record %s %s %q, want spare-1 COMPLETED \"hi\"", rec.ID, rec.Status, rec.Output)
	}
	if h.rt.callsOf("spare-1") != 1 {
		t.Fatal("the function did not run as the spare's id")
	}
	if got := h.stored("spare-1"); got.Status != execution.StatusCompleted {
		t.Fatalf("stored %s", got.Status)
	}
	rt.mu.Lock()
	asked, released := rt.asked, slices.Clone(rt.released)
	rt.mu.Unlock()
	if len(asked) != 1 || asked[0].Attempt != 1 || asked[0].Function != "echo" || asked[0].Artifact.TaskID != testTask {
		t.Fatalf("Reserve asked with %+v", asked)
	}
	if !slices.Equal(released, []string{"spare-1"}) {
		t.Fatalf("released %v, want spare-1 once the run was over", released)
	}

	for _, s := range []*execution.Spec{
		newSpec("echo", execution.ModeSync, "given"),  // the caller's id
		newSpec("echo", execution.ModeStream, "seen"), // announced
	} {
		want := s.ExecutionID
		rec, err := m.Runs.Run(testCtx(t), s, nil)
		if err != nil || rec.ID != want {
			t.Fatalf("run %s: %v, %v", want, rec, err)
		}
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if len(rt.asked) != 1 {
		t.Fatalf("Reserve asked %d times, want once", len(rt.asked))
	}
}
