package server

import (
	"context"
	"testing"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/api/spearlet/spearletconnect"
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
	for name, c := range map[string]spearletconnect.FunctionServiceClient{"connect-proto": e.connect, "connect-json": e.json} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if r, err := c.InvokeFunction(context.Background(), req); err != nil || !r.Success {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkJSONCodec measures the Connect JSON codec on an invocation and
// its answer (the wasm echo's).
func BenchmarkJSONCodec(b *testing.B) {
	e := newEnv(b, envOptions{})
	req := invokeReq("wasm-echo", "spear-bench-payload-spear-bench-payload-", pb.ExecutionMode_EXECUTION_MODE_SYNC)
	resp, err := e.svc.InvokeFunction(context.Background(), req)
	if err != nil || !resp.Success {
		b.Fatal(err)
	}
	codec := enumJSON{"json"}
	reqJSON, err := codec.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("unmarshal-request", func(b *testing.B) {
		for b.Loop() {
			var m pb.InvokeFunctionRequest
			if err := codec.Unmarshal(reqJSON, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("marshal-response", func(b *testing.B) {
		for b.Loop() {
			if _, err := codec.Marshal(resp); err != nil {
				b.Fatal(err)
			}
		}
	})
}
