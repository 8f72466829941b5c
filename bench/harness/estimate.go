package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	pb "github.com/spear-go/spear/api/spearlet"
)

// estimateTarget is what both estimate rows must meet: the median of
// actual/estimated within 0.8–1.25 and its p90 at most 1.5.
const estimateTarget = "median 0.8–1.25, p90 ≤1.5"

// estimateRows measures how honest estimated_completion_ms is: for each
// async execution, the actual time from submission to completion divided
// by the estimate. estimate-accuracy submits a 50 ms function in waves
// (one after the other within a wave), so that the work queued ahead of
// each varies; estimate-burst submits 40 executions of a 200 ms function
// at once (on the main node's 4 slots).
func (e *env) estimateRows(ctx context.Context) ([]Row, error) {
	dir, err := os.MkdirTemp(e.tmp, "estimate-") // in an artifact root
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	n, wave := 200, 20
	if e.p.rounds < 5 { // quick
		n = 100
	}
	waves, err := e.estimateRun(ctx, dir, "steady", 0.05, n, wave, 1, 300*time.Millisecond)
	if err != nil {
		return nil, err
	}
	burst, err := e.estimateRun(ctx, dir, "burst", 0.2, 40, 40, 40, 0)
	if err != nil {
		return nil, err
	}
	return []Row{
		estimateRow("estimate-accuracy", waves, fmt.Sprintf("%d async executions of a 50 ms function in waves of %d every 300 ms", n, wave)),
		estimateRow("estimate-burst", burst, "40 async executions of a 200 ms function submitted at once (40 callers) on 4 slots"),
	}, nil
}

// estimateRun registers a process task sleeping secs, runs it sync 3
// times (so its duration is known), then submits n async executions in
// waves of wave, pause apart, each wave by callers at once, and returns
// each one's actual/estimated, sorted.
func (e *env) estimateRun(ctx context.Context, dir, name string, secs float64, n, wave, callers int, pause time.Duration) ([]float64, error) {
	script := filepath.Join(dir, name+".sh")
	if err := os.WriteFile(script, fmt.Appendf(nil, "#!/bin/sh\nsleep %g\ncat\n", secs), 0o755); err != nil {
		return nil, err
	}
	task := "bench-estimate-" + name
	if err := e.main.register(ctx, task, "process", script); err != nil {
		return nil, err
	}
	for range 3 {
		if err := e.main.invokeSync(ctx, task, nil); err != nil {
			return nil, err
		}
	}
	var subs []estimated
	for len(subs) < n {
		for end := min(len(subs)+wave, n); len(subs) < end; {
			got, err := e.submitAtOnce(ctx, task, min(callers, end-len(subs)))
			if err != nil {
				return nil, err
			}
			subs = append(subs, got...)
		}
		time.Sleep(pause)
	}
	ratios := make([]float64, 0, len(subs))
	for _, s := range subs {
		r, err := e.main.waitStatus(ctx, s.id, 5*time.Millisecond, 2*time.Minute, pb.ExecutionStatus.Terminal)
		if err != nil {
			return nil, err
		}
		if r.Status != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || r.CompletedAt == nil {
			return nil, fmt.Errorf("estimate run %s ended %s", s.id, r.Status)
		}
		ratios = append(ratios, float64(r.CompletedAt.AsTime().Sub(s.at))/float64(s.estimate))
	}
	slices.Sort(ratios)
	return ratios, nil
}

// estimated is one async submission: its id, when it was made and the
// estimate it got.
type estimated struct {
	id       string
	at       time.Time
	estimate time.Duration
}

// submitAtOnce submits k async executions of task at once, one caller
// each.
func (e *env) submitAtOnce(ctx context.Context, task string, k int) ([]estimated, error) {
	out := make([]estimated, k)
	errs := make([]error, k)
	var wg sync.WaitGroup
	for i := range k {
		wg.Go(func() {
			at := time.Now()
			resp, err := e.main.api.InvokeFunction(ctx, &pb.InvokeFunctionRequest{
				InvocationType: pb.InvocationType_INVOCATION_TYPE_EXISTING_TASK,
				TaskId:         task, ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_ASYNC,
			})
			if err != nil {
				errs[i] = err
				return
			}
			out[i] = estimated{resp.ExecutionId, at, time.Duration(resp.EstimatedCompletionMs) * time.Millisecond}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// estimateRow judges sorted actual/estimated ratios against the target.
func estimateRow(id string, ratios []float64, what string) Row {
	q := func(f float64) float64 { return ratios[int(f*float64(len(ratios)-1))] }
	row := Row{
		ID:     id,
		Spear:  &Stat{Value: q(0.5), Unit: "actual/estimated (median)", Samples: len(ratios)},
		Target: estimateTarget,
		Status: StatusPass,
		Note:   fmt.Sprintf("%s; actual/estimated p10 %.2f, median %.2f, p90 %.2f", what, q(0.1), q(0.5), q(0.9)),
	}
	if m := q(0.5); m < 0.8 || m > 1.25 || q(0.9) > 1.5 {
		row.Status = StatusMiss
	}
	return row
}
