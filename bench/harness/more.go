package harness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/store"
)

// asyncRows measures durable async acceptance against a no-op grpc-go
// unary RPC, then end-to-end completion of asyncN executions against the
// sync throughput of the same function.
func (e *env) asyncRows(ctx context.Context) ([]Row, error) {
	c, addr, err := e.startBaseline(ctx, "noop")
	if err != nil {
		return nil, err
	}
	defer e.procs.kill(c)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	hc := healthpb.NewHealthClient(conn)
	noop := func(ctx context.Context, _ int) error {
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	const task = "bench-wasm-echo"
	in := e.p.payload
	var mu sync.Mutex
	var ids []string
	accept := func(ctx context.Context, _ int) error {
		id, err := e.main.submit(ctx, task, in)
		if err != nil {
			return err
		}
		mu.Lock()
		ids = append(ids, id)
		mu.Unlock()
		return nil
	}
	const conc = 32
	per := max(e.p.asyncN/e.p.rounds, 1)
	drive(ctx, conc, 0, 200, noop)
	drive(ctx, conc, 0, 200, accept)
	rs := interleave(ctx, e.p.rounds,
		side{"spear", func(ctx context.Context) round { return drive(ctx, conc, 0, per, accept) }},
		side{"noop", func(ctx context.Context) round { return drive(ctx, conc, 0, per, noop) }},
	)
	acc := Row{ID: "async-accept", BaselineName: "no-op grpc-go unary (health Check)"}
	var f1, f2 error
	acc.Spear, _, f1 = summarize(rs[0])
	acc.Baseline, _, f2 = summarize(rs[1])
	if acc.Spear == nil || acc.Baseline == nil {
		return nil, fmt.Errorf("async accept: spear %v; noop %v", f1, f2)
	}
	acc.ratios()
	target{minThr: 0.8}.judge(&acc)
	acc.Target += ", all durable"
	mu.Lock()
	accepted := ids
	mu.Unlock()
	e.logf("  waiting for %d accepted executions to finish", len(accepted))
	done, _, err := e.waitAll(ctx, e.main, accepted, 3*time.Minute)
	if err != nil {
		acc.Status = StatusMiss
	}
	acc.Note = fmt.Sprintf("concurrency %d, %d executions in %d rounds; %d/%d accepted executions (incl. 200 warm-up) found COMPLETED afterwards", conc, per*e.p.rounds, e.p.rounds, done, len(accepted))
	if err != nil {
		acc.Note += ": " + err.Error()
	}
	if e.opts.Quick {
		acc.Note += " (quick mode: fewer than 10,000)"
	}

	comp, err := e.completionRow(ctx, task, in)
	if err != nil {
		return []Row{acc}, err
	}
	rows := append([]Row{acc, comp}, e.asyncCurveRows(ctx, task)...)
	return append(rows, e.asyncBreakdownRow(ctx, task), e.durableRow(ctx)), nil
}

// completionRow measures end-to-end async completion, asyncN executions
// submitted at concurrency 32 from the first submit to the last
// completion, against the same number run sync at concurrency 32, in
// interleaved rounds (the machine's speed drifts over minutes); the ratio
// is of the rounds' medians.
func (e *env) completionRow(ctx context.Context, task string, in []byte) (Row, error) {
	const conc, rounds = 32, 3
	comp := Row{ID: "async-complete", BaselineName: "spear sync c32, same function, same count"}
	var asyncRates, syncRates []float64
	var spans []string
	for range rounds {
		r := drive(ctx, conc, 0, e.p.asyncN, func(ctx context.Context, _ int) error { return e.main.invokeSync(ctx, task, in) })
		if r.errs > 0 {
			return comp, fmt.Errorf("async complete: sync round: %d failed: %v", r.errs, r.firstErr)
		}
		syncRates = append(syncRates, r.rate())
		rate, span, err := e.completeAsync(ctx, task, in, conc)
		if err != nil {
			return comp, err
		}
		asyncRates = append(asyncRates, rate)
		spans = append(spans, span.Round(time.Millisecond).String())
	}
	comp.Spear = &Stat{PerSec: medianF(asyncRates), Samples: rounds * e.p.asyncN}
	comp.Baseline = &Stat{PerSec: medianF(syncRates)}
	comp.ratios()
	target{minThr: 0.7}.judge(&comp)
	comp.Note = fmt.Sprintf("%d executions a round submitted at concurrency %d, %d rounds interleaved with %d sync calls at concurrency %d; first submit to last completion %s",
		e.p.asyncN, conc, rounds, e.p.asyncN, conc, strings.Join(spans, ", "))
	return comp, nil
}

// completeAsync submits asyncN executions of task at concurrency conc and
// returns how many completed per second from the first submit to the last
// completion, and that span.
func (e *env) completeAsync(ctx context.Context, task string, in []byte, conc int) (float64, time.Duration, error) {
	var mu sync.Mutex
	var ids []string
	t0 := time.Now()
	r := drive(ctx, conc, 0, e.p.asyncN, func(ctx context.Context, _ int) error {
		id, err := e.main.submit(ctx, task, in)
		if err == nil {
			mu.Lock()
			ids = append(ids, id)
			mu.Unlock()
		}
		return err
	})
	if r.errs > 0 {
		return 0, 0, fmt.Errorf("async complete: %d submissions refused: %v", r.errs, r.firstErr)
	}
	done, last, err := e.waitAll(ctx, e.main, ids, 5*time.Minute)
	if err != nil || last.IsZero() {
		return 0, 0, fmt.Errorf("async complete: %d/%d done: %v", done, len(ids), err)
	}
	span := last.Sub(t0)
	return float64(done) / span.Seconds(), span, nil
}

// waitAll waits until every execution is terminal and returns how many
// completed and the latest completion time.
func (e *env) waitAll(ctx context.Context, n *node, ids []string, timeout time.Duration) (int, time.Time, error) {
	deadline := time.Now().Add(timeout)
	pending := ids
	done := 0
	var last time.Time
	var failed atomic.Int64
	var firstBad atomic.Value
	for len(pending) > 0 {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return done, last, fmt.Errorf("%d executions not finished after %s: %w", len(pending), timeout, errdefs.ErrUnavailable)
		}
		var mu sync.Mutex
		var next []string
		var wg sync.WaitGroup
		work := make(chan string)
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for id := range work {
					r, err := n.status(ctx, id)
					mu.Lock()
					switch {
					case err != nil:
						firstBad.CompareAndSwap(nil, err.Error())
						failed.Add(1)
					case !r.Status.Terminal():
						next = append(next, id)
					case r.Status == pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED:
						done++
						if t := r.CompletedAt.AsTime(); t.After(last) {
							last = t
						}
					default:
						failed.Add(1)
						firstBad.CompareAndSwap(nil, r.Status.String()+": "+r.ErrorMessage)
					}
					mu.Unlock()
				}
			}()
		}
		for _, id := range pending {
			work <- id
		}
		close(work)
		wg.Wait()
		pending = next
		if len(pending) > 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if n := failed.Load(); n > 0 {
		return done, last, fmt.Errorf("%d executions lost or not completed (first: %v): %w", n, firstBad.Load(), errdefs.ErrInternal)
	}
	return done, last, nil
}

// coldRows measures the first invocation of a task right after its
// registration and the first after a node restart, per runtime, against
// warm invocations of the same task.
func (e *env) coldRows(ctx context.Context) ([]Row, error) {
	rts := []string{"wasm", "process"}
	if e.docker != "" {
		rts = append(rts, "docker")
	}
	mod, err := os.ReadFile(e.bins["echo.wasm"])
	if err != nil {
		return nil, err
	}
	echo, err := os.ReadFile(e.bins["echo"])
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(e.tmp, "cold")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	in := e.p.payload
	warm := func(task string) *Stat {
		var r round
		k := 20
		if strings.Contains(task, "docker") {
			k = 5
		}
		for range k {
			t0 := time.Now()
			if err := e.main.invokeSync(ctx, task, in); err == nil {
				r.lat = append(r.lat, time.Since(t0))
			}
		}
		return &Stat{P50ms: ms(r.p(0.5)), P99ms: ms(r.p(0.99)), Samples: len(r.lat)}
	}
	var rows []Row
	for _, rt := range rts {
		var lat []time.Duration
		var last string
		var firstErr error
		for i := range e.p.coldN {
			name := fmt.Sprintf("bench-cold-%s-%d-%d", rt, i, time.Now().UnixNano())
			var loc string
			switch rt {
			case "wasm":
				loc, err = tmpFile(dir, name+".wasm", uniqueWasm(mod, name))
			case "process":
				loc, err = tmpFile(dir, name, echo)
			case "docker":
				loc = imageOf("echo")
			}
			if err == nil {
				err = e.main.register(ctx, name, rt, loc)
			}
			if err != nil {
				return rows, err
			}
			t0 := time.Now()
			if err := e.main.invokeSync(ctx, name, in); err != nil {
				firstErr = err
				continue
			}
			lat = append(lat, time.Since(t0))
			last = name
		}
		row := Row{ID: "cold-register-" + rt, BaselineName: "warm, same task", Status: StatusInfo}
		if len(lat) == 0 {
			row.Status, row.Note = StatusError, fmt.Sprint(firstErr)
			rows = append(rows, row)
			continue
		}
		row.Spear = &Stat{P50ms: ms(quantile(lat, 0.5)), P99ms: ms(quantile(lat, 0.99)), Samples: len(lat)}
		row.Baseline = warm(last)
		row.ratios()
		row.Note = fmt.Sprintf("first sync invocation after RegisterTask, %d fresh tasks", len(lat))
		if rt == "wasm" {
			row.Note += " (distinct modules)"
		}
		rows = append(rows, row)
	}
	// After a restart.
	lats := map[string][]time.Duration{}
	for range e.p.restarts {
		n, err := e.restartNode(ctx, e.main)
		e.main = n
		if err != nil {
			return rows, fmt.Errorf("restart: %w", err)
		}
		for _, rt := range rts {
			t0 := time.Now()
			if err := e.main.invokeSync(ctx, "bench-"+rt+"-echo", in); err != nil {
				return rows, err
			}
			lats[rt] = append(lats[rt], time.Since(t0))
		}
	}
	for _, rt := range rts {
		l := lats[rt]
		row := Row{ID: "cold-restart-" + rt, BaselineName: "warm, same task", Status: StatusInfo,
			Spear: &Stat{P50ms: ms(quantile(l, 0.5)), P99ms: ms(quantile(l, 0.99)), Samples: len(l)}}
		row.Baseline = warm("bench-" + rt + "-echo")
		row.ratios()
		row.Note = fmt.Sprintf("first sync invocation per runtime after a node restart, %d restarts (runtimes in order %v)", len(l), rts)
		rows = append(rows, row)
	}
	return rows, nil
}

// memoryRows measures the node's resident memory per queued async
// execution: one worker, held by a sleeper, and queuedN executions queued
// behind it.
func (e *env) memoryRows(ctx context.Context) ([]Row, error) {
	n, err := e.startNode(ctx, "", "--workers", "1")
	if err != nil {
		return nil, err
	}
	defer e.killNode(n) // a throwaway: no need to drain its queue
	if err := n.register(ctx, "bench-process-sleep", "process", e.bins["sleep"]); err != nil {
		return nil, err
	}
	if err := n.register(ctx, "bench-wasm-echo", "wasm", e.bins["echo.wasm"]); err != nil {
		return nil, err
	}
	id, err := n.submit(ctx, "bench-process-sleep", nil)
	if err != nil {
		return nil, err
	}
	if _, err := n.waitStatus(ctx, id, 5*time.Millisecond, 30*time.Second, func(s pb.ExecutionStatus) bool {
		return s == pb.ExecutionStatus_EXECUTION_STATUS_RUNNING
	}); err != nil {
		return nil, err
	}
	// Exercise the submit path once so that its one-off allocations are in
	// the "before" figure.
	drive(ctx, 32, 0, 500, func(ctx context.Context, _ int) error {
		_, err := n.submit(ctx, "bench-wasm-echo", e.p.payload)
		return err
	})
	time.Sleep(time.Second)
	before, err := rssBytes(n.c.pid())
	if err != nil {
		return nil, err
	}
	N := e.p.queuedN
	r := drive(ctx, 32, 0, N, func(ctx context.Context, _ int) error {
		_, err := n.submit(ctx, "bench-wasm-echo", e.p.payload)
		return err
	})
	if len(r.lat) == 0 {
		return nil, fmt.Errorf("memory: nothing accepted: %v", r.firstErr)
	}
	time.Sleep(2 * time.Second)
	after, err := rssBytes(n.c.pid())
	if err != nil {
		return nil, err
	}
	h, err := n.api.GetHealth(ctx, &pb.GetHealthRequest{IncludeDetails: true})
	pending := int32(-1)
	if err == nil {
		pending = h.Details.GetPendingExecutions()
	}
	per := float64(after-before) / float64(len(r.lat))
	row := Row{ID: "memory-per-queued", Spear: &Stat{Value: per, Unit: "B/exec", Samples: len(r.lat)},
		Target: "≤2048 B", Status: StatusPass}
	if per > 2048 {
		row.Status = StatusMiss
	}
	row.Note = fmt.Sprintf("node VmRSS %d MiB before, %d MiB after %d queued (%d accepted, health pending=%d), --workers 1 held by a sleeper; payload %d B",
		before>>20, after>>20, N, len(r.lat), pending, len(e.p.payload))
	if e.opts.Quick {
		row.Note += "; quick mode: 10,000 instead of 100,000"
	}
	return []Row{row}, nil
}

// statusRows compares GetExecutionStatus latency of random ids on a node
// holding statusSmall records with one holding statusBig.
func (e *env) statusRows(ctx context.Context) ([]Row, error) {
	var nodes [2]*node
	var samples [2][]string
	for i, size := range []int{e.p.statusSmall, e.p.statusBig} {
		dir, err := os.MkdirTemp(e.tmp, "status-")
		if err != nil {
			return nil, err
		}
		t0 := time.Now()
		ids, err := populate(ctx, dir, size)
		if err != nil {
			return nil, err
		}
		e.logf("  stored %d records in %s", size, time.Since(t0).Round(time.Millisecond))
		samples[i] = ids
		t0 = time.Now()
		n, err := e.startNode(ctx, dir)
		if err != nil {
			return nil, err
		}
		e.logf("  node with %d records ready in %s", size, time.Since(t0).Round(time.Millisecond))
		defer e.stopNode(n)
		nodes[i] = n
	}
	look := func(i int) call {
		return func(ctx context.Context, _ int) error {
			ids := samples[i]
			_, err := nodes[i].status(ctx, ids[rand.IntN(len(ids))])
			return err
		}
	}
	big := e.p.statusBig
	r := e.compare(ctx, "status-lookup", 1, look(1), fmt.Sprintf("%d records", e.p.statusSmall), look(0), target{maxLat: 1.2})
	r.ID = fmt.Sprintf("status-lookup-%dk", big/1000)
	r.Note = joinNote(r.Note, fmt.Sprintf("GetExecutionStatus of random stored ids at concurrency 1: %d records vs %d", big, e.p.statusSmall))
	if e.opts.Quick {
		r.Note += "; quick mode: 100,000 instead of 1,000,000"
	}
	return []Row{r}, nil
}

// populate stores n completed execution records in the data dir (no node
// may be running on it) and returns a sample of their ids.
func populate(ctx context.Context, dir string, n int) ([]string, error) {
	st, err := store.Open(ctx, store.Options{DataDir: dir, MaxPayload: 8 << 20})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	now := time.Now()
	sample := make([]string, 0, 10_000)
	batch := make([]*execution.Record, 0, 4096)
	for i := range n {
		t := now.Add(time.Duration(i-n) * time.Millisecond)
		rec := &execution.Record{
			ID: execution.NewID(t), TaskID: "bench-status", Mode: execution.ModeAsync, Status: execution.StatusCompleted,
			Attempts: 1, CreatedAt: t, StartedAt: t, CompletedAt: t.Add(time.Millisecond),
			Node: "bench", Output: []byte("spear-bench-output"), DurationMs: 1,
		}
		if batch = append(batch, rec); len(batch) == cap(batch) || i == n-1 {
			// Records and index entries pipelined, one round trip a batch.
			if err := st.Records.PutAll(ctx, batch); err != nil {
				return nil, fmt.Errorf("populate: %w", err)
			}
			batch = batch[:0]
		}
		if len(sample) < cap(sample) {
			sample = append(sample, rec.ID)
		} else if j := rand.IntN(i + 1); j < len(sample) {
			sample[j] = rec.ID
		}
	}
	return sample, nil
}
