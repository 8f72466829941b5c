package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	pb "github.com/spear-go/spear/api/spearlet"
)

// estimateRows measures how honest estimated_completion_ms is: async
// executions of a task with a stable duration (50 ms), submitted in waves
// so that the work queued ahead of each varies, and for each the actual
// time from submission to completion divided by the estimate.
func (e *env) estimateRows(ctx context.Context) ([]Row, error) {
	dir, err := os.MkdirTemp(e.tmp, "estimate-") // in an artifact root
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, "steady.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nsleep 0.05\ncat\n"), 0o755); err != nil {
		return nil, err
	}
	const task = "bench-estimate-steady"
	if err := e.main.register(ctx, task, "process", script); err != nil {
		return nil, err
	}
	n, wave := 200, 20
	if e.p.rounds < 5 { // quick
		n = 100
	}
	type sub struct {
		id       string
		at       time.Time
		estimate time.Duration
	}
	var subs []sub
	for len(subs) < n {
		for range min(wave, n-len(subs)) {
			at := time.Now()
			resp, err := e.main.api.InvokeFunction(ctx, &pb.InvokeFunctionRequest{
				InvocationType: pb.InvocationType_INVOCATION_TYPE_EXISTING_TASK,
				TaskId:         task, ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_ASYNC,
			})
			if err != nil {
				return nil, err
			}
			subs = append(subs, sub{resp.ExecutionId, at, time.Duration(resp.EstimatedCompletionMs) * time.Millisecond})
		}
		time.Sleep(300 * time.Millisecond)
	}
	var ratios []float64
	for _, s := range subs {
		r, err := e.main.waitStatus(ctx, s.id, 5*time.Millisecond, 2*time.Minute, pb.ExecutionStatus.Terminal)
		if err != nil {
			return nil, err
		}
		if r.Status != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || r.CompletedAt == nil {
			return nil, fmt.Errorf("estimate run %s ended %s", s.id, r.Status)
		}
		actual := r.CompletedAt.AsTime().Sub(s.at)
		ratios = append(ratios, float64(actual)/float64(s.estimate))
	}
	slices.Sort(ratios)
	q := func(f float64) float64 { return ratios[int(f*float64(len(ratios)-1))] }
	row := Row{
		ID:     "estimate-accuracy",
		Spear:  &Stat{Value: q(0.5), Unit: "actual/estimated (median)", Samples: len(ratios)},
		Target: "median 0.5–2.0",
		Status: StatusPass,
		Note: fmt.Sprintf("%d async executions of a 50 ms function in waves of %d every 300 ms; actual/estimated p10 %.2f, median %.2f, p90 %.2f",
			len(ratios), wave, q(0.1), q(0.5), q(0.9)),
	}
	if m := q(0.5); m < 0.5 || m > 2 {
		row.Status = StatusMiss
	}
	return []Row{row}, nil
}
