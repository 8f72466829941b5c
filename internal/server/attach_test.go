package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	pb "github.com/spear-go/spear/api/spearlet"
)

// TestAttachToAsync: an async execution ticks for 2 s; a client attaches
// after 1 s and gets every chunk exactly once, in order, the early ones
// replayed, then the final status.
func TestAttachToAsync(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := testCtx(t)
	req := invokeReq("ticker", "", pb.ExecutionMode_EXECUTION_MODE_ASYNC)
	req.Context = &pb.ExecutionContext{Environment: map[string]string{"TICKS": "10"}} // 10 ticks, 200 ms apart
	resp, err := e.grpc.InvokeFunction(ctx, req)
	if err != nil || !resp.Success {
		t.Fatalf("async invoke: %v %v", err, resp)
	}
	id := resp.ExecutionId
	// Attach once the execution is well under way.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := e.grpc.GetExecutionStatus(ctx, &pb.GetExecutionStatusRequest{ExecutionId: id, IncludeResult: true})
		if err != nil {
			t.Fatal(err)
		}
		if st.Result.Status == pb.ExecutionStatus_EXECUTION_STATUS_RUNNING && st.Result.Result != nil && strings.Count(output(t, st.Result.Result), "tick") >= 3 {
			break
		}
		if st.Result.Status >= pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || time.Now().After(deadline) {
			t.Fatalf("execution did not get under way before attaching: %v", st.Result)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stream, err := e.grpc.StreamFunction(ctx, &pb.InvokeFunctionRequest{Context: &pb.ExecutionContext{ExecutionId: id}})
	if err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	var seqs []int64
	var final *pb.StreamExecutionResult
	for {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv: %v (got %q so far)", err, got.String())
		}
		if m.IsFinal {
			final = m
			break
		}
		var b wrapperspb.BytesValue
		if err := m.ChunkData.UnmarshalTo(&b); err != nil {
			t.Fatal(err)
		}
		got.Write(b.Value)
		seqs = append(seqs, m.Sequence)
	}
	var want strings.Builder
	for i := 1; i <= 10; i++ {
		fmt.Fprintf(&want, "tick %d\n", i)
	}
	if got.String() != want.String() {
		t.Fatalf("attached output %q, want %q", got.String(), want.String())
	}
	for i, s := range seqs {
		if s != int64(i) {
			t.Fatalf("chunk sequence %v: not 0, 1, 2, ... (a chunk lost or repeated)", seqs)
		}
	}
	if len(seqs) < 3 {
		t.Fatalf("only %d chunks: the ticks were not separate chunks", len(seqs))
	}
	if final.Status != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || final.ExecutionId != id {
		t.Fatalf("final message %v", final)
	}

	// Attaching after the end replays it all (from JetStream), once.
	stream, err = e.grpc.StreamFunction(ctx, &pb.InvokeFunctionRequest{Context: &pb.ExecutionContext{ExecutionId: id}})
	if err != nil {
		t.Fatal(err)
	}
	got.Reset()
	for {
		m, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.IsFinal {
			break
		}
		got.WriteString(output(t, m.ChunkData))
	}
	if got.String() != want.String() {
		t.Fatalf("replay after the end %q, want %q", got.String(), want.String())
	}
}

// TestWatchExecution: the watch stream reports each transition and ends
// with the terminal status, result included on request.
func TestWatchExecution(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := testCtx(t)
	req := invokeReq("ticker", "", pb.ExecutionMode_EXECUTION_MODE_ASYNC)
	req.Context = &pb.ExecutionContext{Environment: map[string]string{"TICKS": "3"}}
	resp, err := e.grpc.InvokeFunction(ctx, req)
	if err != nil || !resp.Success {
		t.Fatalf("async invoke: %v %v", err, resp)
	}
	w, err := e.grpc.WatchExecution(ctx, &pb.WatchExecutionRequest{ExecutionId: resp.ExecutionId, IncludeResult: true})
	if err != nil {
		t.Fatal(err)
	}
	var statuses []pb.ExecutionStatus
	var last *pb.ExecutionEvent
	for {
		ev, err := w.Recv()
		if err != nil {
			break
		}
		statuses = append(statuses, ev.Status)
		last = ev
	}
	if last == nil || last.Status != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED {
		t.Fatalf("watch ended with %v (statuses %v)", last, statuses)
	}
	if got := output(t, last.Result.Result); got != "tick 1\ntick 2\ntick 3\n" {
		t.Fatalf("final event output %q", got)
	}
	for i := 1; i < len(statuses); i++ {
		if statuses[i] < statuses[i-1] && statuses[i] != pb.ExecutionStatus_EXECUTION_STATUS_PENDING {
			t.Fatalf("statuses went backwards: %v", statuses)
		}
	}
	if len(statuses) < 2 {
		t.Fatalf("statuses %v: want the transitions, not only the end", statuses)
	}
	// Watching an unknown execution is NOT_FOUND.
	w, err = e.grpc.WatchExecution(context.Background(), &pb.WatchExecutionRequest{ExecutionId: "nope"})
	if err == nil {
		_, err = w.Recv()
	}
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("watch of an unknown execution: %v", err)
	}
}
