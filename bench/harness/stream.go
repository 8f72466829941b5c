package harness

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/errdefs"
)

// streamInput makes the ticks function write 200 lines, 100 µs apart.
var streamInput = []byte("200 100")

// streamOne is one streamed run: time to first output chunk and output
// chunks per second after it.
type streamOne struct {
	ttfc   time.Duration
	chunks int
	rate   float64
}

func (e *env) spearStream(ctx context.Context) (streamOne, error) {
	return readStream(ctx, func(ctx context.Context) (grpc.ServerStreamingClient[pb.StreamExecutionResult], error) {
		return e.main.api.StreamFunction(ctx, &pb.InvokeFunctionRequest{
			InvocationType: pb.InvocationType_INVOCATION_TYPE_EXISTING_TASK,
			TaskId:         "bench-process-ticks", ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_STREAM,
			Parameters: params1(streamInput),
		})
	})
}

// readStream opens a stream and reads it to its final message: time to
// its first output chunk and chunks per second after it.
func readStream(ctx context.Context, open func(context.Context) (grpc.ServerStreamingClient[pb.StreamExecutionResult], error)) (streamOne, error) {
	t0 := time.Now()
	st, err := open(ctx)
	if err != nil {
		return streamOne{}, err
	}
	var s streamOne
	var first time.Time
	for {
		m, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return s, err
		}
		if m.ChunkData != nil && len(m.ChunkData.Value) > 0 {
			if s.chunks == 0 {
				first = time.Now()
				s.ttfc = first.Sub(t0)
			}
			s.chunks++
		}
		if m.IsFinal {
			if m.Status != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED {
				return s, fmt.Errorf("stream ended %s: %s: %w", m.Status, m.ErrorMessage, errdefs.ErrInternal)
			}
			break
		}
	}
	if s.chunks == 0 {
		return s, fmt.Errorf("stream: no output: %w", errdefs.ErrInternal)
	}
	s.rate = float64(s.chunks) / time.Since(first).Seconds()
	return s, nil
}

func httpStream(hc *http.Client, url string) func(ctx context.Context) (streamOne, error) {
	return func(ctx context.Context) (streamOne, error) {
		t0 := time.Now()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(streamInput))
		if err != nil {
			return streamOne{}, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return streamOne{}, err
		}
		defer func() { _ = resp.Body.Close() }()
		var s streamOne
		var first time.Time
		buf := make([]byte, 32<<10)
		for {
			n, err := resp.Body.Read(buf)
			if n > 0 {
				if s.chunks == 0 {
					first = time.Now()
					s.ttfc = first.Sub(t0)
				}
				s.chunks++
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return s, err
			}
		}
		if s.chunks == 0 {
			return s, fmt.Errorf("baseline stream: no output: %w", errdefs.ErrInternal)
		}
		s.rate = float64(s.chunks) / time.Since(first).Seconds()
		return s, nil
	}
}

// streamRows measures stream mode: time to first chunk and chunks per
// second of a process that writes 200 lines 100 µs apart, against the bare
// fork/exec server streaming the same binary's output with a flush per read.
func (e *env) streamRows(ctx context.Context) ([]Row, error) {
	c, addr, err := e.startBaseline(ctx, "exechttp", "-binary", e.bins["ticks"])
	if err != nil {
		return nil, err
	}
	defer e.procs.kill(c)
	base := httpStream(newHTTPClient(), "http://"+addr+"/stream")
	type acc struct {
		rounds []round
		rates  []float64
	}
	var sides [2]acc
	runs := [2]func(context.Context) (streamOne, error){e.spearStream, base}
	burst := func(i int, dur time.Duration, keep bool) {
		var r round
		var rates []float64
		t0 := time.Now()
		for time.Since(t0) < dur && ctx.Err() == nil {
			s, err := runs[i](ctx)
			if err != nil {
				r.errs++
				if r.firstErr == nil {
					r.firstErr = err
				}
				if r.errs > 20 && len(r.lat) == 0 {
					break
				}
				continue
			}
			r.lat = append(r.lat, s.ttfc)
			rates = append(rates, s.rate)
		}
		r.elapsed = time.Since(t0)
		if keep {
			sides[i].rounds = append(sides[i].rounds, r)
			sides[i].rates = append(sides[i].rates, medianF(rates))
		}
	}
	burst(0, e.p.warmup, false)
	burst(1, e.p.warmup, false)
	for range e.p.rounds {
		burst(0, e.p.roundDur, true)
		burst(1, e.p.roundDur, true)
	}
	ttfc := Row{ID: "stream-first-chunk", BaselineName: "bare fork/exec http, flush per read", Status: StatusInfo}
	var firsts [2]error
	ttfc.Spear, _, firsts[0] = summarize(sides[0].rounds)
	ttfc.Baseline, _, firsts[1] = summarize(sides[1].rounds)
	if ttfc.Spear == nil || ttfc.Baseline == nil {
		return nil, fmt.Errorf("stream: spear %v; baseline %v", firsts[0], firsts[1])
	}
	// Throughput here is streams per second, not chunks.
	ttfc.ratios()
	ttfc.Note = "throughput column: whole streams per second at concurrency 1 (200 lines, 100 µs apart)"
	chunks := Row{ID: "stream-chunks", BaselineName: ttfc.BaselineName, Status: StatusInfo,
		Spear:    &Stat{Value: medianF(sides[0].rates), Unit: "chunks/s"},
		Baseline: &Stat{Value: medianF(sides[1].rates), Unit: "reads/s"},
		Note:     "median per round of each stream's output chunks per second after the first; baseline counts client reads"}
	chunks.ratios()
	return []Row{ttfc, chunks}, nil
}

// uniqueWasm returns module with a custom section named name appended, so
// that it is a distinct module (distinct digest, distinct compilation).
func uniqueWasm(module []byte, name string) []byte {
	leb := func(v int) []byte {
		var b []byte
		for {
			c := byte(v & 0x7f)
			v >>= 7
			if v != 0 {
				b = append(b, c|0x80)
				continue
			}
			return append(b, c)
		}
	}
	body := append(leb(len(name)), name...)
	body = append(body, "spear-bench"...) // wazero rejects an empty payload
	out := append([]byte{}, module...)
	out = append(out, 0)
	out = append(out, leb(len(body))...)
	return append(out, body...)
}

// scaleRows compares sync throughput at concurrency 32 spread over 100
// distinct wasm tasks (distinct modules) with that of a single task.
func (e *env) scaleRows(ctx context.Context) ([]Row, error) {
	mod, err := os.ReadFile(e.bins["echo.wasm"])
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(e.tmp, "scale")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	n := e.p.scaleTasks
	tasks := make([]string, n)
	for i := range tasks {
		name := fmt.Sprintf("bench-scale-%03d", i)
		p, err := tmpFile(dir, name+".wasm", uniqueWasm(mod, name))
		if err != nil {
			return nil, err
		}
		if err := e.main.register(ctx, name, "wasm", p); err != nil {
			return nil, err
		}
		tasks[i] = name
	}
	in := e.p.payload
	for _, t := range tasks { // first runs compile
		if err := e.main.invokeSync(ctx, t, in); err != nil {
			return nil, err
		}
	}
	many := func(ctx context.Context, _ int) error {
		return e.main.invokeSync(ctx, tasks[rand.IntN(len(tasks))], in)
	}
	one := func(ctx context.Context, _ int) error { return e.main.invokeSync(ctx, "bench-wasm-echo", in) }
	r := e.compare(ctx, fmt.Sprintf("scale-%d-tasks", n), 32, many, "1 task (spear)", one, target{minThr: 0.8})
	r.Note = joinNote(r.Note, fmt.Sprintf("wasm echo, concurrency 32, %d distinct modules vs one", n))
	return []Row{r}, nil
}

// cancelRows measures, per runtime, the time from a cancel request to the
// terminal state of a running sleeper, as GetExecutionStatus reports it;
// and for a wasm guest that spins (no host call to interrupt: only the
// compiled-in termination checks stop it), the time to CANCELLED after a
// cancel and to TIMEOUT after a 300 ms timeout_ms.
func (e *env) cancelRows(ctx context.Context) ([]Row, error) {
	cases := []struct {
		id, task string
		run      func(ctx context.Context, task string) (total, rpc time.Duration, err error)
		maxP99   float64 // ms
	}{
		{"cancel-wasm", "bench-wasm-sleep", e.cancelOne, 50},
		{"cancel-process", "bench-process-sleep", e.cancelOne, 50},
		{"cancel-docker", "bench-docker-sleep", e.cancelOne, 50},
		{"cancel-wasm-spin", "bench-wasm-spin", e.cancelOne, 200},
		{"timeout-wasm-spin", "bench-wasm-spin", e.timeoutOne, 1000},
	}
	var rows []Row
	for _, c := range cases {
		if strings.HasPrefix(c.task, "bench-docker") && e.docker == "" {
			rows = append(rows, Row{ID: c.id, Status: StatusSkip, Note: "skipped: no engine"})
			continue
		}
		var lat, rpc []time.Duration
		var firstErr error
		for range e.p.cancelN {
			d, r, err := c.run(ctx, c.task)
			if err != nil {
				firstErr = err
				continue
			}
			lat, rpc = append(lat, d), append(rpc, r)
		}
		if len(lat) == 0 {
			rows = append(rows, Row{ID: c.id, Status: StatusError, Note: fmt.Sprint(firstErr)})
			continue
		}
		row := Row{ID: c.id, Spear: &Stat{P50ms: ms(quantile(lat, 0.5)), P99ms: ms(quantile(lat, 0.99)), Samples: len(lat)},
			Target: fmt.Sprintf("p99 ≤%g ms", c.maxP99), Status: StatusPass}
		if row.Spear.P99ms > c.maxP99 {
			row.Status = StatusMiss
		}
		row.Note = fmt.Sprintf("%d samples (p99 of few samples is their max); ", len(lat))
		if strings.HasPrefix(c.id, "timeout") {
			row.Note += "sync invoke with timeout_ms 300 to its TIMEOUT answer"
		} else {
			row.Note += fmt.Sprintf("cancel RPC returned after p50 %.1f ms", ms(quantile(rpc, 0.5)))
		}
		if firstErr != nil {
			row.Note += fmt.Sprintf("; %d failed: %v", e.p.cancelN-len(lat), firstErr)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// timeoutOne invokes task synchronously with timeout_ms 300 and returns
// the time to its answer, which must be TIMEOUT / EXECUTION_TIMEOUT.
func (e *env) timeoutOne(ctx context.Context, task string) (total, _ time.Duration, err error) {
	t0 := time.Now()
	resp, err := e.main.api.InvokeFunction(ctx, &pb.InvokeFunctionRequest{
		InvocationType: pb.InvocationType_INVOCATION_TYPE_EXISTING_TASK,
		TaskId:         task, ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC,
		Context: &pb.ExecutionContext{TimeoutMs: 300},
	})
	if err != nil {
		return 0, 0, err
	}
	total = time.Since(t0)
	if r := resp.GetResult(); r.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_TIMEOUT || r.GetErrorCode() != errdefs.ExecutionTimeout.String() {
		return 0, 0, fmt.Errorf("%s ended %s %s, not TIMEOUT EXECUTION_TIMEOUT: %w", task, r.GetStatus(), r.GetErrorCode(), errdefs.ErrInternal)
	}
	return total, 0, nil
}

func (e *env) cancelOne(ctx context.Context, task string) (total, rpc time.Duration, err error) {
	id, err := e.main.submit(ctx, task, nil)
	if err != nil {
		return 0, 0, err
	}
	if _, err := e.main.waitStatus(ctx, id, 2*time.Millisecond, 30*time.Second, func(s pb.ExecutionStatus) bool {
		return s == pb.ExecutionStatus_EXECUTION_STATUS_RUNNING || s.Terminal()
	}); err != nil {
		return 0, 0, err
	}
	time.Sleep(20 * time.Millisecond) // let it really start
	t0 := time.Now()
	if _, err := e.main.api.CancelExecution(ctx, &pb.CancelExecutionRequest{ExecutionId: id, Reason: "bench"}); err != nil {
		return 0, 0, err
	}
	rpc = time.Since(t0)
	r, err := e.main.waitStatus(ctx, id, time.Millisecond, 30*time.Second, pb.ExecutionStatus.Terminal)
	if err != nil {
		return 0, 0, err
	}
	total = time.Since(t0)
	if r.Status != pb.ExecutionStatus_EXECUTION_STATUS_CANCELLED {
		return 0, 0, fmt.Errorf("%s ended %s, not CANCELLED: %w", task, r.Status, errdefs.ErrInternal)
	}
	return total, rpc, nil
}
