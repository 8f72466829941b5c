// Package graph is the logic of task graphs: checking a graph before
// anything runs (Validate), deciding what happens next from the states of
// its steps (Plan), and making a step's input from its parents' outputs
// (Input). It holds no state and does no I/O: the executor stores a
// graph's record and runs its steps.
package graph

import (
	"slices"
	"strings"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/ident"
)

// Limits of a graph.
const (
	MaxSteps     = 1000
	MaxStepIDLen = 64
)

// Validate checks a graph's steps and output before anything runs, and
// fills Output with the single sink when it was not given. Every refusal
// is INVALID_ARGUMENT with a code naming what is wrong, and the step.
func Validate(g *execution.Graph) error {
	switch {
	case len(g.Steps) == 0:
		return errdefs.GraphEmpty.New("the graph has no steps")
	case len(g.Steps) > MaxSteps:
		return errdefs.GraphTooLarge.New("the graph has %d steps; at most %d are allowed", len(g.Steps), MaxSteps)
	}
	index := make(map[string]int, len(g.Steps))
	for i := range g.Steps {
		s := &g.Steps[i]
		if err := validStep(s); err != nil {
			return err
		}
		if _, dup := index[s.ID]; dup {
			return errdefs.DuplicateStep.New("two steps have the id %q", s.ID)
		}
		index[s.ID] = i
	}
	for i := range g.Steps {
		if err := validDeps(&g.Steps[i], index); err != nil {
			return err
		}
	}
	if cycle := findCycle(g.Steps, index); cycle != nil {
		return errdefs.GraphCycle.New("steps depend on each other in a cycle: %s", strings.Join(cycle, " -> "))
	}
	return validOutput(g, index)
}

func validStep(s *execution.Step) error {
	switch {
	case !ident.Valid(s.ID) || len(s.ID) > MaxStepIDLen:
		return errdefs.InvalidStep.New("step id %q: want 1-%d characters of A-Z, a-z, 0-9, '_' or '-'", s.ID, MaxStepIDLen)
	case s.TaskID == "":
		return errdefs.InvalidStep.New("step %q names no task (task_id)", s.ID)
	case s.TimeoutMs < 0:
		return errdefs.InvalidStep.New("step %q: timeout_ms must not be negative", s.ID)
	case s.MaxRetries < 0:
		return errdefs.InvalidStep.New("step %q: max_retries must not be negative", s.ID)
	case s.OnFailure != execution.OnFailureFail && s.OnFailure != execution.OnFailureContinue:
		return errdefs.InvalidStep.New("step %q: on_failure must be FAIL or CONTINUE", s.ID)
	case s.HasInput && len(s.DependsOn) > 0:
		return errdefs.InvalidStep.New("step %q has parameters and depends on steps: only a root step takes parameters (the others read their parents' output)", s.ID)
	}
	return nil
}

func validDeps(s *execution.Step, index map[string]int) error {
	seen := make(map[string]bool, len(s.DependsOn))
	for _, d := range s.DependsOn {
		switch {
		case d == s.ID:
			return errdefs.SelfDependency.New("step %q depends on itself", s.ID)
		case seen[d]:
			return errdefs.InvalidStep.New("step %q names %q twice in depends_on", s.ID, d)
		}
		if _, ok := index[d]; !ok {
			return errdefs.UnknownDependency.New("step %q depends on %q, which is not a step of the graph", s.ID, d)
		}
		seen[d] = true
	}
	return nil
}

// findCycle returns the ids of the steps on one cycle, the first repeated
// at the end, or nil when the graph has none.
func findCycle(steps []execution.Step, index map[string]int) []string {
	const (
		unseen = iota
		onPath
		done
	)
	mark := make([]int8, len(steps))
	var path []int
	var visit func(i int) []string
	visit = func(i int) []string {
		mark[i] = onPath
		path = append(path, i)
		for _, d := range steps[i].DependsOn {
			j := index[d]
			switch mark[j] {
			case onPath:
				start := slices.Index(path, j)
				ids := make([]string, 0, len(path)-start+1)
				for _, k := range path[start:] {
					ids = append(ids, steps[k].ID)
				}
				return append(ids, steps[j].ID)
			case unseen:
				if c := visit(j); c != nil {
					return c
				}
			}
		}
		path = path[:len(path)-1]
		mark[i] = done
		return nil
	}
	for i := range steps {
		if mark[i] == unseen {
			if c := visit(i); c != nil {
				return c
			}
		}
	}
	return nil
}

func validOutput(g *execution.Graph, index map[string]int) error {
	if g.Output != "" {
		if _, ok := index[g.Output]; !ok {
			return errdefs.InvalidGraphOutput.New("output %q is not a step of the graph", g.Output)
		}
		return nil
	}
	sinks := Sinks(g.Steps)
	if len(sinks) != 1 {
		return errdefs.InvalidGraphOutput.New("the graph ends in %d steps (%s): name the one whose output is the graph's (output)",
			len(sinks), strings.Join(sinks, ", "))
	}
	g.Output = sinks[0]
	return nil
}

// Sinks are the ids of the steps no step depends on.
func Sinks(steps []execution.Step) []string {
	needed := make(map[string]bool, len(steps))
	for _, s := range steps {
		for _, d := range s.DependsOn {
			needed[d] = true
		}
	}
	var sinks []string
	for _, s := range steps {
		if !needed[s.ID] {
			sinks = append(sinks, s.ID)
		}
	}
	return sinks
}
