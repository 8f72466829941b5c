package harness

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// durableRow accepts async executions on a node of its own, kills the node
// with SIGKILL right after the last acceptance, restarts it on the same
// data dir and checks that every accepted execution still completes.
func (e *env) durableRow(ctx context.Context) Row {
	row := Row{ID: "async-durable", Target: "all accepted complete after kill -9", Status: StatusPass}
	fail := func(err error) Row {
		row.Status, row.Note = StatusError, err.Error()
		return row
	}
	// A short ack wait so that executions running at the kill are handed
	// out again within seconds rather than the default 30 s.
	n, err := e.startNode(ctx, "", "--ack-wait", "3s")
	if err != nil {
		return fail(err)
	}
	if err := n.register(ctx, "bench-wasm-echo", "wasm", e.bins["echo.wasm"]); err != nil {
		e.killNode(n)
		return fail(err)
	}
	var mu sync.Mutex
	var ids []string
	N := max(e.p.asyncN/2, 1)
	r := drive(ctx, 32, 0, N, func(ctx context.Context, _ int) error {
		id, err := n.submit(ctx, "bench-wasm-echo", e.p.payload)
		if err == nil {
			mu.Lock()
			ids = append(ids, id)
			mu.Unlock()
		}
		return err
	})
	e.killNode(n)
	t0 := time.Now()
	n, err = e.startNode(ctx, n.dir, n.extra...)
	if err != nil {
		return fail(fmt.Errorf("restart after kill: %w", err))
	}
	defer e.killNode(n)
	done, _, err := e.waitAll(ctx, n, ids, 2*time.Minute)
	row.Spear = &Stat{Value: float64(done), Unit: fmt.Sprintf("of %d done", len(ids)), Samples: len(ids)}
	row.Note = fmt.Sprintf("%d accepted at concurrency 32 (%d refused), node killed with SIGKILL at once, restarted (--ack-wait 3s): %d/%d COMPLETED %s later",
		len(ids), r.errs, done, len(ids), time.Since(t0).Round(time.Millisecond))
	if err != nil || done != len(ids) {
		row.Status = StatusMiss
		if err != nil {
			row.Note += ": " + err.Error()
		}
	}
	return row
}
