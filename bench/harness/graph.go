package harness

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/errdefs"
)

// chainSteps is the length of the chain graphRows measures.
const chainSteps = 10

// graphRows measures task graphs against the same work called step by
// step: what a graph adds per step (a sync chain of wasm echoes against
// the same calls made one after another), and how soon a streamed pipe's
// output starts (its first chunk against the first step's streamed
// alone).
func (e *env) graphRows(ctx context.Context) ([]Row, error) {
	in := e.p.payload
	steps := make([]*pb.GraphStep, chainSteps)
	for i := range steps {
		steps[i] = &pb.GraphStep{Id: fmt.Sprintf("s%d", i), TaskId: "bench-wasm-echo"}
		if i > 0 {
			steps[i].DependsOn = []string{steps[i-1].Id}
		}
	}
	chain := func(ctx context.Context, _ int) error {
		ctx, cancel := context.WithTimeout(ctx, time.Minute) // a stalled graph fails the row, not the run
		defer cancel()
		resp, err := e.main.api.InvokeGraph(ctx, &pb.InvokeGraphRequest{ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC,
			Parameters: params1(in), Steps: steps})
		if err != nil {
			return err
		}
		if !resp.Success || len(resp.Result.GetResult().GetValue()) < len(in) {
			return fmt.Errorf("chain: %s: %w", resp.Message, errdefs.ErrInternal)
		}
		return nil
	}
	calls := func(ctx context.Context, _ int) error {
		for range chainSteps {
			if err := e.main.invokeSync(ctx, "bench-wasm-echo", in); err != nil {
				return err
			}
		}
		return nil
	}
	per := e.compare(ctx, "graph-step-overhead", 1, chain, fmt.Sprintf("%d sync calls one after another", chainSteps), calls, target{})
	overBy(&per, chainSteps, 1, "ms per step", "p50 +≤1 ms per step")
	pipe := e.compare(ctx, "graph-pipe-first-chunk", 1, e.firstChunk(e.pipeStream), "the first step streamed alone", e.firstChunk(e.spearStream), target{})
	overBy(&pipe, 1, 5, "ms later", "p50 +≤5 ms")
	pipe.Note = joinNote(pipe.Note, "latency columns: time to the first output chunk; ticks (200 lines, 100 µs apart) piped into a streaming cat")
	return append([]Row{per, pipe}, e.graphStopRows(ctx)...), nil
}

// overBy judges a row by what Spear's p50 adds to the baseline's, divided
// by n, against at most limit.
func overBy(r *Row, n int, limit float64, unit, target string) {
	if r.Spear == nil || r.Baseline == nil {
		return
	}
	over := (r.Spear.P50ms - r.Baseline.P50ms) / float64(n)
	r.Spear.Value, r.Spear.Unit = over, unit
	r.Target, r.Status = target, StatusPass
	if over > limit {
		r.Status = StatusMiss
	}
}

// firstChunk turns a stream into a load call whose latency is the time to
// its first chunk (the stream is still read to its end).
func (e *env) firstChunk(stream func(context.Context) (streamOne, error)) call {
	return func(ctx context.Context, _ int) error {
		s, err := stream(ctx)
		reportLatency(ctx, s.ttfc)
		return err
	}
}

// pipeStream streams the graph ticks | cat.
func (e *env) pipeStream(ctx context.Context) (streamOne, error) {
	return readStream(ctx, func(ctx context.Context) (grpc.ServerStreamingClient[pb.StreamExecutionResult], error) {
		return e.main.api.StreamGraph(ctx, &pb.InvokeGraphRequest{Parameters: params1(streamInput), Steps: []*pb.GraphStep{
			{Id: "ticks", TaskId: "bench-process-ticks"}, {Id: "cat", TaskId: "bench-process-cat", DependsOn: []string{"ticks"}}}})
	})
}

// graphStopRows measure what issue #13 bounds in time: a graph's cancel
// (every step's process gone: its record is terminal only once its
// process ended) and its deadline (TIMEOUT at timeout_ms).
func (e *env) graphStopRows(ctx context.Context) []Row {
	cancel := e.sampleRow(ctx, "graph-cancel", 1000, "cancel of a graph with two running steps and one waiting, to every step ended", e.graphCancelOne)
	timeout := e.sampleRow(ctx, "graph-timeout", 300, "sync graph of timeout_ms 1500 over three steps that never end: |time to its TIMEOUT answer − 1.5 s|", e.graphTimeoutOne)
	return []Row{cancel, timeout}
}

// sampleRow takes e.p.cancelN samples of one and judges their p99
// against maxP99 (ms).
func (e *env) sampleRow(ctx context.Context, id string, maxP99 float64, what string, one func(context.Context) (time.Duration, error)) Row {
	var lat []time.Duration
	var firstErr error
	for range e.p.cancelN {
		d, err := one(ctx)
		if err != nil {
			firstErr = err
			continue
		}
		lat = append(lat, d)
	}
	if len(lat) == 0 {
		return Row{ID: id, Status: StatusError, Note: fmt.Sprint(firstErr)}
	}
	row := Row{ID: id, Spear: &Stat{P50ms: ms(quantile(lat, 0.5)), P99ms: ms(quantile(lat, 0.99)), Samples: len(lat)},
		Target: fmt.Sprintf("p99 ≤%g ms", maxP99), Status: StatusPass,
		Note: fmt.Sprintf("%d samples (p99 of few samples is their max); %s", len(lat), what)}
	if row.Spear.P99ms > maxP99 {
		row.Status = StatusMiss
	}
	if firstErr != nil {
		row.Note += fmt.Sprintf("; %d failed: %v", e.p.cancelN-len(lat), firstErr)
	}
	return row
}

func (e *env) graphCancelOne(ctx context.Context) (time.Duration, error) {
	resp, err := e.main.api.InvokeGraph(ctx, &pb.InvokeGraphRequest{ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_ASYNC,
		Steps: []*pb.GraphStep{{Id: "a", TaskId: "bench-process-sleep"}, {Id: "b", TaskId: "bench-process-sleep"},
			{Id: "c", TaskId: "bench-process-echo", DependsOn: []string{"a", "b"}}}})
	if err != nil {
		return 0, err
	}
	ids := []string{resp.ExecutionId + "_a", resp.ExecutionId + "_b"}
	for _, id := range ids {
		if _, err := e.main.waitStatus(ctx, id, 2*time.Millisecond, 30*time.Second, func(s pb.ExecutionStatus) bool {
			return s == pb.ExecutionStatus_EXECUTION_STATUS_RUNNING
		}); err != nil {
			return 0, err
		}
	}
	time.Sleep(20 * time.Millisecond) // let them really start
	t0 := time.Now()
	if _, err := e.main.api.CancelExecution(ctx, &pb.CancelExecutionRequest{ExecutionId: resp.ExecutionId}); err != nil {
		return 0, err
	}
	for _, id := range ids {
		if _, err := e.main.waitStatus(ctx, id, time.Millisecond, 30*time.Second, pb.ExecutionStatus.Terminal); err != nil {
			return 0, err
		}
	}
	return time.Since(t0), nil
}

func (e *env) graphTimeoutOne(ctx context.Context) (time.Duration, error) {
	const timeout = 1500 * time.Millisecond
	t0 := time.Now()
	resp, err := e.main.api.InvokeGraph(ctx, &pb.InvokeGraphRequest{ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC,
		TimeoutMs: timeout.Milliseconds(), Steps: []*pb.GraphStep{{Id: "a", TaskId: "bench-process-sleep"},
			{Id: "b", TaskId: "bench-process-sleep", DependsOn: []string{"a"}}, {Id: "c", TaskId: "bench-process-sleep", DependsOn: []string{"b"}}}})
	if err != nil {
		return 0, err
	}
	took := time.Since(t0)
	if s := resp.GetResult().GetStatus(); s != pb.ExecutionStatus_EXECUTION_STATUS_TIMEOUT {
		return 0, fmt.Errorf("graph ended %s: %s: %w", s, resp.GetMessage(), errdefs.ErrInternal)
	}
	return (took - timeout).Abs(), nil
}
