package e2e

import (
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	pb "github.com/spear-go/spear/api/spearlet"
)

// TestCallbackAllowFlag: --callback-allow replaces the loopback default: a
// callback to an allowed address is accepted, one to 127.0.0.1 — allowed
// by default — now refused with PERMISSION_DENIED / CALLBACK_NOT_ALLOWED.
func TestCallbackAllowFlag(t *testing.T) {
	n := startNode(t, "", nodeOpts{args: []string{"--callback-allow", "127.0.0.2:9,hooks.example.com"}})
	tests := []struct {
		url  string
		code string // "" accepted
	}{
		{"http://127.0.0.2:9/hook", ""},
		{"http://127.0.0.1:9/hook", "CALLBACK_NOT_ALLOWED"},
		{"http://127.0.0.2:10/hook", "CALLBACK_NOT_ALLOWED"},
		{"http://localhost:9/hook", "CALLBACK_NOT_ALLOWED"},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			req := invocation(t, "echo", pb.ExecutionMode_EXECUTION_MODE_ASYNC, []byte("x"))
			req.CallbackUrl = tc.url
			var tr metadata.MD
			resp, err := n.client.InvokeFunction(ctx(t, callTimeout), req, grpc.Trailer(&tr))
			if tc.code == "" {
				if err != nil || !resp.GetSuccess() {
					t.Fatalf("InvokeFunction with callback %s: %v, %v; want accepted", tc.url, resp, err)
				}
				return
			}
			if e := asRPCError(t, err, tr); e.code != codes.PermissionDenied || e.reason != tc.code {
				t.Fatalf("InvokeFunction with callback %s: %+v; want PermissionDenied / %s", tc.url, e, tc.code)
			}
		})
	}
}
