package graph

import (
	"fmt"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
)

// Plan is what a graph does next, decided from its steps' states.
type Plan struct {
	// Start are the steps whose parents all ended so that they can run.
	Start []int
	// Skip are steps that will never start: the graph failed or timed
	// out first. They end CANCELLED with UPSTREAM_FAILED.
	Skip []int
	// Cancel are unfinished steps to stop: with fail_fast, every one; at
	// the deadline, those still queued (a running step's own deadline is
	// its graph's: it stops then, TIMEOUT, without a cancel).
	Cancel []int
	// Outcome is the graph's terminal state, once it has one.
	Outcome *Outcome
}

// Outcome is a graph's terminal state.
type Outcome struct {
	Status  execution.Status
	Code    string
	Message string
	// Step is the index of the step it is about (the failed step, or the
	// output step of a completed graph); -1 for none.
	Step int
}

// Next decides what g does next at now. A step's final failure (with
// on_failure FAIL) or the deadline fails the graph: the steps not started
// are skipped, the running ones are cancelled with fail_fast and else
// allowed to finish before the graph ends; at the deadline they stop by
// themselves.
func Next(g *execution.Graph, now time.Time) Plan {
	failed := firstFailure(g)
	// Past the deadline, a graph that could still complete, or whose
	// steps stopped at the deadline, timed out.
	timedOut := !g.Deadline.IsZero() && !now.Before(g.Deadline) && (!allEnded(g) || failed >= 0)
	var p Plan
	running := 0
	for i, st := range g.States {
		switch {
		case !st.Started() && st.Status == execution.StatusUnknown:
			if failed >= 0 || timedOut {
				p.Skip = append(p.Skip, i)
			} else if ready(g, i) || Streamed(g, i) && g.States[indexOf(g, g.Steps[i].DependsOn[0])].Status == execution.StatusRunning {
				p.Start = append(p.Start, i)
			}
		case !st.Status.Terminal():
			running++
			if failed >= 0 && g.FailFast || timedOut && st.Status != execution.StatusRunning {
				p.Cancel = append(p.Cancel, i)
			}
		}
	}
	switch {
	case timedOut:
		p.Outcome = &Outcome{Status: execution.StatusTimeout, Code: errdefs.ExecutionTimeout.String(), Step: -1,
			Message: fmt.Sprintf("the graph's deadline passed (%s)", g.Deadline.Format(time.RFC3339Nano))}
	case failed >= 0 && (running == 0 || g.FailFast):
		p.Outcome = stepFailed(g, failed)
	case failed < 0 && running == 0 && len(p.Start) == 0:
		out := indexOf(g, g.Output)
		if g.States[out].Status == execution.StatusCompleted {
			p.Outcome = &Outcome{Status: execution.StatusCompleted, Step: out}
		} else {
			p.Outcome = stepFailed(g, out)
		}
	}
	return p
}

func allEnded(g *execution.Graph) bool {
	for _, st := range g.States {
		if !st.Status.Terminal() {
			return false
		}
	}
	return true
}

// firstFailure is the index of the first step that failed for good with
// on_failure FAIL, or -1.
func firstFailure(g *execution.Graph) int {
	for i, st := range g.States {
		if FailedStep(st) && g.Steps[i].OnFailure == execution.OnFailureFail {
			return i
		}
	}
	return -1
}

// FailedStep reports whether a step ran and ended other than COMPLETED
// (a skipped step never ran).
func FailedStep(st execution.StepState) bool {
	return st.Started() && st.Status.Terminal() && st.Status != execution.StatusCompleted
}

// Streamed reports whether step i reads its parent's output as it is
// written: it has one parent, whose failure fails the graph (a parent
// with on_failure CONTINUE is waited for: its dependents get its error).
// Such a step starts as soon as its parent runs.
func Streamed(g *execution.Graph, i int) bool {
	deps := g.Steps[i].DependsOn
	return len(deps) == 1 && g.Steps[indexOf(g, deps[0])].OnFailure == execution.OnFailureFail
}

// StreamsTo reports whether a step of g reads step i's output as it is
// written (see Streamed).
func StreamsTo(g *execution.Graph, i int) bool {
	for j := range g.Steps {
		if deps := g.Steps[j].DependsOn; len(deps) == 1 && deps[0] == g.Steps[i].ID && Streamed(g, j) {
			return true
		}
	}
	return false
}

// ready reports whether every parent of step i ended so that it runs:
// completed, or failed with on_failure CONTINUE.
func ready(g *execution.Graph, i int) bool {
	for _, d := range g.Steps[i].DependsOn {
		j := indexOf(g, d)
		st := g.States[j]
		ok := st.Status == execution.StatusCompleted ||
			FailedStep(st) && g.Steps[j].OnFailure == execution.OnFailureContinue
		if !ok {
			return false
		}
	}
	return true
}

func stepFailed(g *execution.Graph, i int) *Outcome {
	st := g.States[i]
	return &Outcome{Status: execution.StatusFailed, Code: errdefs.StepFailed.String(), Step: i,
		Message: fmt.Sprintf("step %q %s: %s: %s", g.Steps[i].ID, describe(st.Status), st.ErrorCode, st.ErrorMessage)}
}

func describe(s execution.Status) string {
	switch s {
	case execution.StatusTimeout:
		return "timed out"
	case execution.StatusCancelled:
		return "was cancelled"
	}
	return "failed"
}

// indexOf is the index of step id (which Validate made sure exists).
func indexOf(g *execution.Graph, id string) int {
	for i := range g.Steps {
		if g.Steps[i].ID == id {
			return i
		}
	}
	return -1
}

// Skipped is the state of a step that never started because its graph
// ended first.
func Skipped(why string) execution.StepState {
	return execution.StepState{Status: execution.StatusCancelled, ErrorCode: errdefs.UpstreamFailed.String(),
		ErrorMessage: "never started: " + why}
}

// CriticalPath is the longest chain of steps, each taking what dur says
// of its task: how long the graph takes with every step run at once as
// soon as it can.
func CriticalPath(steps []execution.Step, dur func(*execution.Step) time.Duration) time.Duration {
	index := make(map[string]int, len(steps))
	for i := range steps {
		index[steps[i].ID] = i
	}
	memo := make([]time.Duration, len(steps))
	seen := make([]bool, len(steps))
	var finish func(i int) time.Duration
	finish = func(i int) time.Duration {
		if seen[i] {
			return memo[i]
		}
		seen[i] = true
		var start time.Duration
		for _, d := range steps[i].DependsOn {
			start = max(start, finish(index[d]))
		}
		memo[i] = start + dur(&steps[i])
		return memo[i]
	}
	var longest time.Duration
	for i := range steps {
		longest = max(longest, finish(i))
	}
	return longest
}
