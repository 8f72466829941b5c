package harness

import (
	"context"
	"fmt"
	"sync"
	"time"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/store"
)

// storeOutputBytes is what each execution of the store row prints.
const storeOutputBytes = 1_000_000

// storeRows measures how many bytes of store one async execution's output
// takes: its output should be stored once (≈ 1 MB for 1 MB), not once in
// the output chunks and again in the record.
//
// The node runs alone on a data dir of its own; the store is measured with
// store.StorageBytes while the node is stopped (exact, unlike the node's
// spear_store_bytes, which is refreshed every second), after one warm-up
// execution and after N more.
func (e *env) storeRows(ctx context.Context) ([]Row, error) {
	row := Row{ID: "store-bytes-per-output", Target: "≈ 1 MB, not 2 (≤ 1.3 MB)", Status: StatusPass}
	N := 50
	if e.opts.Quick {
		N = 20
	}
	script := fmt.Sprintf("#!/bin/sh\nyes \"spear output line\" | head -c %d\n", storeOutputBytes)
	fn, err := tmpFile(e.tmp, "store-print-1mb.sh", []byte(script))
	if err != nil {
		return nil, err
	}
	const task = "bench-store-print"
	n, err := e.startNode(ctx, "")
	if err != nil {
		return nil, err
	}
	dir := n.dir
	if err := n.register(ctx, task, "process", fn); err != nil {
		e.stopNode(n)
		return nil, err
	}
	// One warm-up execution, so that the "before" figure holds the task and
	// a record of each kind.
	id, err := n.submit(ctx, task, nil)
	if err == nil {
		_, _, err = e.waitAll(ctx, n, []string{id}, time.Minute)
	}
	e.stopNode(n)
	if err != nil {
		return nil, fmt.Errorf("store: warm-up: %w", err)
	}
	before, err := storeBytes(ctx, dir)
	if err != nil {
		return nil, err
	}

	if n, err = e.startNode(ctx, dir); err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var ids []string
	r := drive(ctx, 4, 0, N, func(ctx context.Context, _ int) error {
		id, err := n.submit(ctx, task, nil)
		if err == nil {
			mu.Lock()
			ids = append(ids, id)
			mu.Unlock()
		}
		return err
	})
	done, _, err := e.waitAll(ctx, n, ids, 3*time.Minute)
	var sizeErr error
	if err == nil && len(ids) > 0 {
		st, serr := n.api.GetExecutionStatus(ctx, &pb.GetExecutionStatusRequest{ExecutionId: ids[0], IncludeResult: true})
		if serr != nil || st.GetResult().GetOutputSize() != storeOutputBytes {
			sizeErr = fmt.Errorf("execution %s: output of %d bytes, want %d (%v)", ids[0], st.GetResult().GetOutputSize(), storeOutputBytes, serr)
		}
	}
	e.stopNode(n)
	if err != nil {
		return nil, fmt.Errorf("store: %d/%d completed (%d refused): %w", done, len(ids), r.errs, err)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("store: nothing accepted: %v", r.firstErr)
	}
	if sizeErr != nil {
		return nil, sizeErr
	}
	after, err := storeBytes(ctx, dir)
	if err != nil {
		return nil, err
	}
	per := float64(after-before) / float64(len(ids))
	row.Spear = &Stat{Value: per, Unit: "B/exec", Samples: len(ids)}
	if per > 1.3*storeOutputBytes {
		row.Status = StatusMiss
	}
	row.Note = fmt.Sprintf("%d async executions of a process function printing %d bytes, all COMPLETED; store %d B before, %d B after (store.StorageBytes, node stopped): %.2f x the output",
		len(ids), storeOutputBytes, before, after, per/storeOutputBytes)
	if e.opts.Quick {
		row.Note += "; quick mode: 20 instead of 50"
	}
	return []Row{row}, nil
}

// storeBytes opens the store of a stopped node's data dir and returns
// what JetStream holds for Spear.
func storeBytes(ctx context.Context, dir string) (int64, error) {
	st, err := store.Open(ctx, store.Options{DataDir: dir, MaxPayload: 8 << 20})
	if err != nil {
		return 0, fmt.Errorf("store: open %s: %w", dir, err)
	}
	defer st.Close()
	return st.StorageBytes(ctx)
}
