package harness

import (
	"context"
	"fmt"

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
	return []Row{per, pipe}, nil
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
