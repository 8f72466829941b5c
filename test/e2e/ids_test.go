package e2e

import (
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	pb "github.com/spear-go/spear/api/spearlet"
)

// TestExecutionIDsNeverReused: a sync or stream call naming an existing
// execution's id is refused with EXECUTION_EXISTS, as async is, and the
// existing record stays as it was; a stream request that attaches to an
// existing id but also names another task or carries input is refused too.
func TestExecutionIDsNeverReused(t *testing.T) {
	n := startNode(t, "", nodeOpts{})
	first := invocation(t, "ticker", pb.ExecutionMode_EXECUTION_MODE_ASYNC, nil)
	first.Context = &pb.ExecutionContext{ExecutionId: "kept-id", Environment: map[string]string{"TICKS": "3"}}
	id := n.invoke(t, first).GetExecutionId()
	before := n.waitFinal(t, id, finishBound).GetResult()

	sync := invocation(t, "echo", pb.ExecutionMode_EXECUTION_MODE_SYNC, []byte("replacement"))
	sync.Context.ExecutionId = id
	var trailer metadata.MD
	_, err := n.client.InvokeFunction(ctx(t, callTimeout), sync, grpc.Trailer(&trailer))
	wantExists(t, "sync", asRPCError(t, err, trailer))

	stream := invocation(t, "echo", pb.ExecutionMode_EXECUTION_MODE_STREAM, []byte("replacement"))
	stream.Context.ExecutionId = id
	wantExists(t, "stream with input", asRPCError(t, streamError(t, n, stream, &trailer), trailer))

	other := &pb.InvokeFunctionRequest{TaskId: "echo", Context: &pb.ExecutionContext{ExecutionId: id}}
	wantExists(t, "attach naming another task", asRPCError(t, streamError(t, n, other, &trailer), trailer))

	same := &pb.InvokeFunctionRequest{TaskId: "ticker", Context: &pb.ExecutionContext{ExecutionId: id}}
	if err := streamError(t, n, same, &trailer); err != nil {
		t.Fatalf("attach naming the execution's own task: %v", err)
	}

	after := n.status(t, id).GetResult()
	if !proto.Equal(before, after) {
		t.Fatalf("the record changed:\nbefore %v\nafter  %v", before, after)
	}
	if got := output(t, after.GetResult()); got != "tick 1\ntick 2\ntick 3\n" {
		t.Fatalf("output %q", got)
	}
}

func wantExists(t *testing.T, what string, e rpcError) {
	t.Helper()
	if e.code != codes.AlreadyExists || e.reason != "EXECUTION_EXISTS" || e.trailer != "EXECUTION_EXISTS" {
		t.Fatalf("%s with an existing id: %v %s (trailer %q), want ALREADY_EXISTS EXECUTION_EXISTS", what, e.code, e.reason, e.trailer)
	}
}
