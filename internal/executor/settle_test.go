package executor

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	spearrt "github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/task"
)

// TestSettleInputStoppedShort: a run whose input stopped short never
// completes, even when the function exited 0 on the early end of its
// input and a cancel (its graph ended) stopped it before the input did.
func TestSettleInputStoppedShort(t *testing.T) {
	inputErr := errdefs.InputUnavailable.New(`step "F" ended FAILED`)
	for _, tc := range []struct {
		name     string
		cancel   error // the run context's cause, nil: not cancelled
		inputErr error
		want     execution.Status
		wantCode errdefs.Code
	}{
		{"exit 0", nil, nil, execution.StatusCompleted, errdefs.Code{}},
		{"input stopped short", inputErr, inputErr, execution.StatusFailed, errdefs.InputUnavailable},
		{"cancelled first, then input stopped short", fmt.Errorf("%w: graph ended", errCancelled), inputErr, execution.StatusCancelled, errdefs.Cancelled},
		{"cancelled, input whole, exit 0", fmt.Errorf("%w: graph ended", errCancelled), nil, execution.StatusCompleted, errdefs.Code{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &engine{&core{opts: Options{Now: time.Now}}}
			ctx, cancel := context.WithCancelCause(context.Background())
			l := &live{rec: &execution.Record{Status: execution.StatusRunning}}
			l.setCancel(cancel)
			if tc.cancel != nil {
				l.stop(tc.cancel, true)
			}
			if tc.inputErr != nil {
				l.failInput(tc.inputErr)
			}
			m.settle(ctx, l, &outputSink{}, outputSummary{}, spearrt.Result{ExitCode: 0}, nil, task.Limits{})
			if r := l.final(); r.Status != tc.want || r.ErrorCode != tc.wantCode.String() {
				t.Fatalf("%s %s (%s); want %s %s", r.Status, r.ErrorCode, r.ErrorMessage, tc.want, tc.wantCode)
			}
		})
	}
}

// TestResetUnfinished: a requeued graph runs again every step that did
// not complete and every step downstream of one.
func TestResetUnfinished(t *testing.T) {
	done := execution.StepState{Status: execution.StatusCompleted, ExecID: "x"}
	failed := execution.StepState{Status: execution.StatusFailed, ExecID: "x"}
	g := &execution.Graph{
		Steps: []execution.Step{{ID: "A"}, {ID: "Z", DependsOn: []string{"F"}}, {ID: "F", DependsOn: []string{"A"}},
			{ID: "B", DependsOn: []string{"A"}}, {ID: "Y", DependsOn: []string{"Z", "B"}}},
		States: []execution.StepState{done, done, failed, done, done},
	}
	resetUnfinished(g)
	for i, want := range []bool{false, true, true, false, true} {
		if reset := !g.States[i].Started(); reset != want {
			t.Errorf("step %s reset %v; want %v", g.Steps[i].ID, reset, want)
		}
	}
}

// TestGraphBehind: a step's report that its graph's record does not list
// as started yet (the advance that queued it has not stored the graph) is
// an error to retry, not a report that changes nothing.
func TestGraphBehind(t *testing.T) {
	graphOf := func(status execution.Status, st execution.StepState) *execution.Record {
		return &execution.Record{ID: "g", Status: status, Graph: &execution.Graph{
			Steps:  []execution.Step{{ID: "a"}, {ID: "b"}},
			States: []execution.StepState{{Status: execution.StatusCompleted, ExecID: "g_a"}, st},
		}}
	}
	ended := &execution.Record{ID: "g_b", StepID: "b", Status: execution.StatusCompleted}
	for _, tc := range []struct {
		name   string
		graph  *execution.Record
		ended  *execution.Record
		behind bool
	}{
		{"not listed yet", graphOf(execution.StatusRunning, execution.StepState{Status: execution.StatusPending}), ended, true},
		{"listed", graphOf(execution.StatusRunning, execution.StepState{Status: execution.StatusRunning, ExecID: "g_b"}), ended, false},
		{"skipped", graphOf(execution.StatusRunning, execution.StepState{Status: execution.StatusCancelled}), ended, false},
		{"graph ended", graphOf(execution.StatusCancelled, execution.StepState{Status: execution.StatusPending}), ended, false},
		{"no report", graphOf(execution.StatusRunning, execution.StepState{Status: execution.StatusPending}), nil, false},
		{"unknown step", graphOf(execution.StatusRunning, execution.StepState{Status: execution.StatusPending}),
			&execution.Record{ID: "g_z", StepID: "z"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := behind(tc.graph, tc.ended)
			if (err != nil) != tc.behind || (err != nil && !errors.Is(err, errdefs.ErrUnavailable)) {
				t.Fatalf("behind = %v, want behind %v", err, tc.behind)
			}
		})
	}
}
