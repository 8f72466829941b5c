package harness

import (
	"context"
	"fmt"
	"sync"
	"time"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/errdefs"
)

// asyncCurveRows measure async throughput against the number of
// submitters (c = 1, 8, 32, 128): acceptance and completion of asyncN/5
// executions at each, so where it stops scaling is visible.
func (e *env) asyncCurveRows(ctx context.Context, task string) []Row {
	n := max(e.p.asyncN/5, 100)
	var rows []Row
	for _, conc := range []int{1, 8, 32, 128} {
		var mu sync.Mutex
		ids := make([]string, 0, n)
		t0 := time.Now()
		r := drive(ctx, conc, 0, n, func(ctx context.Context, _ int) error {
			id, err := e.main.submit(ctx, task, e.p.payload)
			if err == nil {
				mu.Lock()
				ids = append(ids, id)
				mu.Unlock()
			}
			return err
		})
		row := Row{ID: fmt.Sprintf("async-curve-c%d", conc), Status: StatusInfo}
		done, last, err := e.waitAll(ctx, e.main, ids, 3*time.Minute)
		if err != nil || last.IsZero() {
			row.Status, row.Note = StatusError, fmt.Sprintf("%d/%d done: %v", done, len(ids), err)
			rows = append(rows, row)
			continue
		}
		complete := float64(done) / last.Sub(t0).Seconds()
		row.Spear = &Stat{P50ms: ms(r.p(0.5)), P99ms: ms(r.p(0.99)), PerSec: r.rate(), Samples: len(r.lat)}
		row.Note = fmt.Sprintf("%d executions at %d submitters: accepted %.0f/s (p50/p99 of the accept), completed %.0f/s (first submit to last completion)",
			n, conc, r.rate(), complete)
		rows = append(rows, row)
	}
	return rows
}

// asyncBreakdownRow splits one async execution's latency, one at a time:
// its acceptance (a plain submit), and for a submit that waits for the
// result (wait true), the time to its start (acceptance, queue wait and
// claim), its run, and from its end to the answer (final write, ack and
// the waiter's wake-up).
func (e *env) asyncBreakdownRow(ctx context.Context, task string) Row {
	n := max(e.p.asyncN/50, 50)
	row := Row{ID: "async-breakdown", Status: StatusInfo}
	acc := drive(ctx, 1, 0, n, func(ctx context.Context, _ int) error {
		_, err := e.main.submit(ctx, task, e.p.payload)
		return err
	})
	var toStart, run, toAnswer, total []time.Duration
	for range n {
		t0 := time.Now()
		resp, err := e.main.api.InvokeFunction(ctx, &pb.InvokeFunctionRequest{
			InvocationType: pb.InvocationType_INVOCATION_TYPE_EXISTING_TASK,
			TaskId:         task, ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_ASYNC, Wait: true,
			Parameters: params1(e.p.payload),
		})
		t2 := time.Now()
		res := resp.GetResult()
		if err == nil && res.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED {
			err = fmt.Errorf("%s: %s: %w", res.GetStatus(), res.GetErrorMessage(), errdefs.ErrInternal)
		}
		if err != nil {
			row.Status, row.Note = StatusError, err.Error()
			return row
		}
		started, ended := res.GetStartedAt().AsTime(), res.GetCompletedAt().AsTime()
		toStart = append(toStart, started.Sub(t0))
		run = append(run, ended.Sub(started))
		toAnswer = append(toAnswer, t2.Sub(ended))
		total = append(total, t2.Sub(t0))
	}
	p50 := func(ds []time.Duration) float64 { return ms(quantile(ds, 0.5)) }
	row.Spear = &Stat{P50ms: p50(total), P99ms: ms(quantile(total, 0.99)), Samples: n}
	row.Note = fmt.Sprintf("p50 of %d, one at a time: accept %.2f ms (a plain submit); with wait: to start %.2f ms, run %.2f ms, end to answer %.2f ms, total %.2f ms",
		n, ms(acc.p(0.5)), p50(toStart), p50(run), p50(toAnswer), p50(total))
	return row
}
