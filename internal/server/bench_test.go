package server

import (
	"context"
	"testing"

	pb "github.com/spear-go/spear/api/spearlet"
)

// BenchmarkInvokeSyncWasm measures a sync invocation of the WASM echo,
// in-process (the service's own cost) and over gRPC.
func BenchmarkInvokeSyncWasm(b *testing.B) {
	e := newEnv(b, envOptions{})
	req := invokeReq("wasm-echo", string(make([]byte, 100)), pb.ExecutionMode_EXECUTION_MODE_SYNC)
	b.Run("service", func(b *testing.B) {
		for b.Loop() {
			if r, err := e.svc.InvokeFunction(context.Background(), req); err != nil || !r.Success {
				b.Fatal(err, r.GetMessage())
			}
		}
	})
	b.Run("grpc", func(b *testing.B) {
		for b.Loop() {
			if r, err := e.grpc.InvokeFunction(context.Background(), req); err != nil || !r.Success {
				b.Fatal(err, r.GetMessage())
			}
		}
	})
}
