package executor

import (
	"context"
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
