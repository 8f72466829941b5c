package graph

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
)

// steps parses "a b:a c:a,b" into steps (id:deps) of task t.
func steps(spec string) []execution.Step {
	var out []execution.Step
	for _, f := range strings.Fields(spec) {
		id, deps, _ := strings.Cut(f, ":")
		s := execution.Step{ID: id, TaskID: "t"}
		if deps != "" {
			s.DependsOn = strings.Split(deps, ",")
		}
		out = append(out, s)
	}
	return out
}

func TestValidate(t *testing.T) {
	many := make([]execution.Step, MaxSteps+1)
	for i := range many {
		many[i] = execution.Step{ID: "s" + strings.Repeat("x", i%50) + string(rune('a'+i%26)), TaskID: "t"}
	}
	for _, tc := range []struct {
		name   string
		steps  []execution.Step
		output string
		code   errdefs.Code
		says   string
		sink   string
	}{
		{name: "chain", steps: steps("a b:a c:b"), sink: "c"},
		{name: "diamond", steps: steps("a b:a c:a d:b,c"), sink: "d"},
		{name: "output given", steps: steps("a b:a c:a"), output: "b", sink: "b"},
		{name: "empty", code: errdefs.GraphEmpty},
		{name: "too many", steps: many, code: errdefs.GraphTooLarge},
		{name: "duplicate", steps: steps("a a"), code: errdefs.DuplicateStep, says: `"a"`},
		{name: "self", steps: steps("a:a"), code: errdefs.SelfDependency, says: `"a"`},
		{name: "missing dependency", steps: steps("a b:x"), code: errdefs.UnknownDependency, says: `"x"`},
		{name: "cycle", steps: steps("a:c b:a c:b d"), code: errdefs.GraphCycle, says: "a -> c -> b -> a"},
		{name: "two sinks", steps: steps("a b:a c:a"), code: errdefs.InvalidGraphOutput, says: "b, c"},
		{name: "unknown output", steps: steps("a"), output: "z", code: errdefs.InvalidGraphOutput},
		{name: "bad id", steps: steps("a.b"), code: errdefs.InvalidStep},
		{name: "no task", steps: []execution.Step{{ID: "a"}}, code: errdefs.InvalidStep},
		{name: "twice in deps", steps: steps("a b:a,a"), code: errdefs.InvalidStep},
		{name: "input on a child", steps: []execution.Step{{ID: "a", TaskID: "t"}, {ID: "b", TaskID: "t", DependsOn: []string{"a"}, HasInput: true}}, code: errdefs.InvalidStep},
		{name: "negative timeout", steps: []execution.Step{{ID: "a", TaskID: "t", TimeoutMs: -1}}, code: errdefs.InvalidStep},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &execution.Graph{Steps: tc.steps, Output: tc.output}
			err := Validate(g)
			if tc.code == (errdefs.Code{}) {
				if err != nil || g.Output != tc.sink {
					t.Fatalf("Validate = %v, output %q; want nil, %q", err, g.Output, tc.sink)
				}
				return
			}
			if !tc.code.Is(err) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("Validate = %v; want %s saying %q", err, tc.code, tc.says)
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("%v is not INVALID_ARGUMENT", err)
			}
		})
	}
}

// graphOf returns a validated graph with the given step states
// ("-" not started, "P" pending, "R" running, "C" completed, "F" failed).
func graphOf(t *testing.T, spec, states string) *execution.Graph {
	t.Helper()
	g := &execution.Graph{Steps: steps(spec), FailFast: true}
	if err := Validate(g); err != nil {
		t.Fatal(err)
	}
	for i, c := range states {
		st := execution.StepState{ExecID: "e" + g.Steps[i].ID}
		switch c {
		case '-':
			st = execution.StepState{}
		case 'P':
			st.Status = execution.StatusPending
		case 'R':
			st.Status = execution.StatusRunning
		case 'C':
			st.Status = execution.StatusCompleted
		case 'F':
			st.Status, st.ErrorCode = execution.StatusFailed, "FUNCTION_FAILED"
		}
		g.States = append(g.States, st)
	}
	return g
}

func TestNext(t *testing.T) {
	now := time.Unix(1000, 0)
	for _, tc := range []struct {
		name, spec, states string
		failFast           bool
		cont               string // a step with on_failure CONTINUE
		deadline           time.Duration
		start, skip, stop  []int
		status             execution.Status
	}{
		{name: "roots start", spec: "a b:a c:b", states: "---", failFast: true, start: []int{0}},
		{name: "after parent", spec: "a b:a c:b", states: "C--", failFast: true, start: []int{1}},
		{name: "streamed from a running parent", spec: "a b:a c:b", states: "R--", failFast: true, start: []int{1}},
		{name: "a parent that may fail on is waited for", spec: "a b:a", states: "R-", cont: "a"},
		{name: "diamond waits for both", spec: "a b:a c:a d:b,c", states: "CCR-", failFast: true},
		{name: "diamond joins", spec: "a b:a c:a d:b,c", states: "CCC-", failFast: true, start: []int{3}},
		{name: "completed", spec: "a b:a", states: "CC", failFast: true, status: execution.StatusCompleted},
		{name: "fail fast", spec: "a b:a c:a d:b,c", states: "CRF-", failFast: true, skip: []int{3}, stop: []int{1}, status: execution.StatusFailed},
		{name: "failure waits for siblings", spec: "a b:a c:a d:b,c", states: "CRF-", skip: []int{3}},
		{name: "failure after siblings", spec: "a b:a c:a d:b,c", states: "CCF-", skip: []int{3}, status: execution.StatusFailed},
		{name: "continue", spec: "a b:a c:a d:b,c", states: "CCF-", cont: "c", start: []int{3}},
		{name: "deadline", spec: "a b:a c:b", states: "CR-", failFast: true, deadline: -time.Second, skip: []int{2}, status: execution.StatusTimeout},
		{name: "deadline stops the queued", spec: "a b:a c:a d:b,c", states: "CRP-", deadline: -time.Second, skip: []int{3}, stop: []int{2}, status: execution.StatusTimeout},
		{name: "done before the deadline", spec: "a", states: "C", deadline: -time.Second, status: execution.StatusCompleted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := graphOf(t, tc.spec, tc.states)
			g.FailFast = tc.failFast
			for i := range g.Steps {
				if g.Steps[i].ID == tc.cont {
					g.Steps[i].OnFailure = execution.OnFailureContinue
				}
			}
			if tc.deadline != 0 {
				g.Deadline = now.Add(tc.deadline)
			}
			p := Next(g, now)
			if !equal(p.Start, tc.start) || !equal(p.Skip, tc.skip) || !equal(p.Cancel, tc.stop) {
				t.Fatalf("start %v skip %v cancel %v; want %v %v %v", p.Start, p.Skip, p.Cancel, tc.start, tc.skip, tc.stop)
			}
			got := execution.StatusUnknown
			if p.Outcome != nil {
				got = p.Outcome.Status
			}
			if got != tc.status {
				t.Fatalf("outcome %v; want %v", got, tc.status)
			}
			if got == execution.StatusFailed && !strings.Contains(p.Outcome.Message, `step "c"`) {
				t.Fatalf("outcome %q does not name step c", p.Outcome.Message)
			}
		})
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestKeyed(t *testing.T) {
	ups := []execution.Upstream{{Step: "B"}, {Step: "C"}, {Step: "D", Failed: true, ErrorCode: "FUNCTION_FAILED", ErrorMessage: "exit status 1"}}
	b, err := Keyed(ups, [][]byte{[]byte("héllo\n"), {0xff, 0x00}, nil})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got["B"] != "héllo\n" || got["D"] != nil {
		t.Fatalf("keyed input %s", b)
	}
	if c, _ := got["C"].(map[string]any); c[Base64Key] != "/wA=" {
		t.Fatalf("binary output not marked base64: %s", b)
	}
	if e, _ := got[ErrorsKey].(map[string]any); e["D"] == nil {
		t.Fatalf("failed parent's error missing: %s", b)
	}
	if Verbatim(ups[:1]) != true || Verbatim(ups[2:]) || Verbatim(ups[:2]) {
		t.Fatal("Verbatim: want true for one completed parent only")
	}
}

func TestCriticalPath(t *testing.T) {
	s := steps("a b:a c:a d:b,c")
	dur := map[string]time.Duration{"a": 1, "b": 5, "c": 2, "d": 1}
	if got := CriticalPath(s, func(st *execution.Step) time.Duration { return dur[st.ID] }); got != 7 {
		t.Fatalf("critical path %v; want 7 (a b d)", got)
	}
}
