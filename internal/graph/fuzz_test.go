package graph

import (
	"errors"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
)

// FuzzValidate: any graph is either refused with INVALID_ARGUMENT or
// accepted acyclic, with an output step, and then Next can run it to an
// end by completing what it starts.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{"a b:a c:b", "a b:a c:a d:b,c", "a:a", "a:b b:a", "a a", "", "a b:x", "a.b"} {
		f.Add(s, "")
	}
	f.Fuzz(func(t *testing.T, spec, output string) {
		g := &execution.Graph{Steps: steps(spec), Output: output}
		err := Validate(g)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) || errdefs.CodeOf(err) == errdefs.InvalidArgument.String() {
				t.Fatalf("refusal %v: want a specific INVALID_ARGUMENT code", err)
			}
			return
		}
		if findCycle(g.Steps, indexAll(g.Steps)) != nil || indexOf(g, g.Output) < 0 {
			t.Fatalf("accepted %q with a cycle or without output", spec)
		}
		runToEnd(t, g)
	})
}

func indexAll(steps []execution.Step) map[string]int {
	m := map[string]int{}
	for i, s := range steps {
		m[s.ID] = i
	}
	return m
}

// runToEnd completes every step Next starts until it gives an outcome.
func runToEnd(t *testing.T, g *execution.Graph) {
	g.States = make([]execution.StepState, len(g.Steps))
	for round := 0; round <= len(g.Steps); round++ {
		p := Next(g, time.Time{})
		if p.Outcome != nil {
			if p.Outcome.Status != execution.StatusCompleted {
				t.Fatalf("outcome %v", p.Outcome)
			}
			return
		}
		if len(p.Start) == 0 {
			t.Fatalf("stuck: nothing to start and no outcome (%+v)", g.States)
		}
		for _, i := range p.Start {
			g.States[i] = execution.StepState{ExecID: "x", Status: execution.StatusCompleted}
		}
	}
	t.Fatalf("no outcome after %d rounds", len(g.Steps)+1)
}
