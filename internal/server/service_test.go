package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/errdefs"
)

func TestInput(t *testing.T) {
	anyOf := func(m proto.Message) *anypb.Any {
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	tests := []struct {
		name   string
		params []*pb.FunctionParameter
		want   string
		code   string // error code, "" for success
	}{
		{"no parameters", nil, "", ""},
		{"one bytes value", []*pb.FunctionParameter{{Name: "in", Value: anyOf(wrapperspb.Bytes([]byte("raw\x00bytes")))}}, "raw\x00bytes", ""},
		{"one unnamed bytes value", []*pb.FunctionParameter{{Value: anyOf(wrapperspb.Bytes([]byte("x")))}}, "x", ""},
		{"one string value", []*pb.FunctionParameter{{Name: "s", Value: anyOf(wrapperspb.String("héllo"))}}, "héllo", ""},
		{"one int64 value", []*pb.FunctionParameter{{Name: "n", Value: anyOf(wrapperspb.Int64(5))}}, `{"n":"5"}`, ""},
		{"one bool value", []*pb.FunctionParameter{{Name: "b", Value: anyOf(wrapperspb.Bool(true))}}, `{"b":true}`, ""},
		{"several", []*pb.FunctionParameter{
			{Name: "s", Value: anyOf(wrapperspb.String("x"))},
			{Name: "n", Value: anyOf(wrapperspb.Int32(7))},
			{Name: "d", Value: anyOf(wrapperspb.Double(1.5))},
		}, `{"d":1.5,"n":7,"s":"x"}`, ""},
		{"optional without value is skipped", []*pb.FunctionParameter{
			{Name: "s", Value: anyOf(wrapperspb.String("x"))},
			{Name: "opt"},
		}, `{"s":"x"}`, ""},
		{"duplicate names", []*pb.FunctionParameter{
			{Name: "a", Value: anyOf(wrapperspb.String("x"))},
			{Name: "a", Value: anyOf(wrapperspb.String("y"))},
		}, "", "DUPLICATE_PARAMETER"},
		{"unnamed among several", []*pb.FunctionParameter{
			{Name: "a", Value: anyOf(wrapperspb.String("x"))},
			{Value: anyOf(wrapperspb.String("y"))},
		}, "", "INVALID_PARAMETER"},
		{"required without value", []*pb.FunctionParameter{{Name: "r", Required: true}}, "", "MISSING_PARAMETER"},
		{"required without value among several", []*pb.FunctionParameter{
			{Name: "a", Value: anyOf(wrapperspb.String("x"))},
			{Name: "r", Required: true},
		}, "", "MISSING_PARAMETER"},
		{"unknown type url", []*pb.FunctionParameter{{Name: "u", Value: &anypb.Any{TypeUrl: "type.googleapis.com/no.such.Type", Value: []byte{1}}}}, "", "INVALID_PARAMETER"},
		{"unknown type url among several", []*pb.FunctionParameter{
			{Name: "a", Value: anyOf(wrapperspb.String("x"))},
			{Name: "u", Value: &anypb.Any{TypeUrl: "type.googleapis.com/no.such.Type"}},
		}, "", "INVALID_PARAMETER"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := input(tc.params)
			if tc.code != "" {
				if err == nil || errdefs.CodeOf(err) != tc.code || !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("input = %q, %v; want an invalid-argument error %s", got, err, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("input: %v", err)
			}
			if string(got) != tc.want {
				t.Errorf("input = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestValidEnv(t *testing.T) {
	tests := []struct {
		env map[string]string
		ok  bool
	}{
		{nil, true},
		{map[string]string{"NAME": "x", "EMPTY": ""}, true},
		{map[string]string{"": "x"}, false},
		{map[string]string{"A=B": "x"}, false},
		{map[string]string{"A\x00": "x"}, false},
		{map[string]string{"A": "x\x00y"}, false},
		{map[string]string{"A\xff": "x"}, false},
		{map[string]string{"A": "\xff"}, false},
	}
	for _, tc := range tests {
		err := validEnv(tc.env)
		if (err == nil) != tc.ok {
			t.Errorf("validEnv(%q) = %v, want ok=%v", tc.env, err, tc.ok)
		}
		if err != nil && errdefs.CodeOf(err) != "INVALID_ENVIRONMENT" {
			t.Errorf("validEnv(%q): code %s", tc.env, errdefs.CodeOf(err))
		}
	}
}

// grpcErrorCode returns the code and error_code (ErrorInfo reason, checked
// equal to the trailer) of a failed gRPC call.
func grpcErrorCode(t *testing.T, err error, tr metadata.MD) (codes.Code, string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || err == nil {
		t.Fatalf("want a status error, got %v", err)
	}
	r := reasonOfStatus(t, st)
	if got := tr.Get(ErrorCodeTrailer); len(got) != 1 || got[0] != r {
		t.Errorf("trailer %s = %q, ErrorInfo reason %q", ErrorCodeTrailer, got, r)
	}
	return st.Code(), r
}

func TestInvokeFunction(t *testing.T) {
	e := newEnv(t, envOptions{maxInput: 1 << 10})

	t.Run("mode errors are responses", func(t *testing.T) {
		for _, tc := range []struct {
			mode pb.ExecutionMode
			code string
		}{
			{pb.ExecutionMode_EXECUTION_MODE_STREAM, "STREAM_MODE_NOT_SUPPORTED"},
			{pb.ExecutionMode_EXECUTION_MODE_UNKNOWN, "UNKNOWN_EXECUTION_MODE"},
			{pb.ExecutionMode(42), "UNKNOWN_EXECUTION_MODE"},
		} {
			req := invokeReq("echo", "x", tc.mode)
			g, err := e.grpc.InvokeFunction(testCtx(t), req)
			if err != nil {
				t.Fatalf("grpc %v: %v", tc.mode, err)
			}
			c, err := e.json.InvokeFunction(testCtx(t), req)
			if err != nil {
				t.Fatalf("connect %v: %v", tc.mode, err)
			}
			for _, resp := range []*pb.InvokeFunctionResponse{g, c} {
				if resp.Success || resp.Result.GetErrorCode() != tc.code || resp.Result.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_FAILED || resp.Message == "" {
					t.Errorf("mode %v: %v; want success=false, FAILED, error_code %s", tc.mode, resp, tc.code)
				}
			}
			if tc.code == "STREAM_MODE_NOT_SUPPORTED" && !strings.Contains(g.Message, "StreamFunction") {
				t.Errorf("message %q does not point to StreamFunction", g.Message)
			}
		}
	})

	t.Run("invalid requests", func(t *testing.T) {
		sync := pb.ExecutionMode_EXECUTION_MODE_SYNC
		with := func(f func(r *pb.InvokeFunctionRequest)) *pb.InvokeFunctionRequest {
			r := invokeReq("echo", "x", sync)
			f(r)
			return r
		}
		tests := []struct {
			name string
			req  *pb.InvokeFunctionRequest
			code codes.Code
			ec   string
		}{
			{"unknown task", invokeReq("no-such-task", "x", sync), codes.NotFound, "TASK_NOT_FOUND"},
			{"invalid task id", invokeReq("bad id!", "x", sync), codes.InvalidArgument, "INVALID_TASK_ID"},
			{"callback to a host not allowed", with(func(r *pb.InvokeFunctionRequest) { r.CallbackUrl = "http://example.com/hook" }), codes.PermissionDenied, "CALLBACK_NOT_ALLOWED"},
			{"callback to a private address", with(func(r *pb.InvokeFunctionRequest) { r.CallbackUrl = "http://10.0.0.5:8080/hook" }), codes.PermissionDenied, "CALLBACK_NOT_ALLOWED"},
			{"missing task id", invokeReq("", "x", sync), codes.InvalidArgument, "MISSING_TASK_ID"},
			{"new task without artifact", with(func(r *pb.InvokeFunctionRequest) {
				r.InvocationType = pb.InvocationType_INVOCATION_TYPE_NEW_TASK
			}), codes.InvalidArgument, "MISSING_ARTIFACT_SPEC"},
			{"invalid invocation type", with(func(r *pb.InvokeFunctionRequest) { r.InvocationType = 9 }), codes.InvalidArgument, "INVALID_INVOCATION_TYPE"},
			{"negative timeout", with(func(r *pb.InvokeFunctionRequest) { r.Context = &pb.ExecutionContext{TimeoutMs: -1} }), codes.InvalidArgument, "INVALID_TIMEOUT"},
			{"negative max retries", with(func(r *pb.InvokeFunctionRequest) { r.Context = &pb.ExecutionContext{MaxRetries: -2} }), codes.InvalidArgument, "INVALID_MAX_RETRIES"},
			{"env name with =", with(func(r *pb.InvokeFunctionRequest) {
				r.Context = &pb.ExecutionContext{Environment: map[string]string{"A=B": "x"}}
			}), codes.InvalidArgument, "INVALID_ENVIRONMENT"},
			{"empty env name", with(func(r *pb.InvokeFunctionRequest) {
				r.Context = &pb.ExecutionContext{Environment: map[string]string{"": "x"}}
			}), codes.InvalidArgument, "INVALID_ENVIRONMENT"},
			{"bad execution id", with(func(r *pb.InvokeFunctionRequest) { r.Context = &pb.ExecutionContext{ExecutionId: "no/slashes"} }), codes.InvalidArgument, "INVALID_EXECUTION_ID"},
			{"long function name", with(func(r *pb.InvokeFunctionRequest) { r.FunctionName = strings.Repeat("f", 257) }), codes.InvalidArgument, "INVALID_FUNCTION_NAME"},
			{"duplicate parameter", with(func(r *pb.InvokeFunctionRequest) {
				r.Parameters = append(bytesParam("a"), bytesParam("b")...)
			}), codes.InvalidArgument, "DUPLICATE_PARAMETER"},
			{"input too large", with(func(r *pb.InvokeFunctionRequest) { r.Parameters = bytesParam(strings.Repeat("x", 2<<10)) }), codes.ResourceExhausted, "INPUT_TOO_LARGE"},
			{"missing artifact file", &pb.InvokeFunctionRequest{
				InvocationType: pb.InvocationType_INVOCATION_TYPE_NEW_TASK, TaskName: "ghost", ExecutionMode: sync,
				ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: filepath.Join(os.TempDir(), "spear-no-such-file")},
			}, codes.FailedPrecondition, "ARTIFACT_NOT_FOUND"},
			{"artifact outside the roots", &pb.InvokeFunctionRequest{
				InvocationType: pb.InvocationType_INVOCATION_TYPE_NEW_TASK, TaskName: "shell", ExecutionMode: sync,
				ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: "/bin/sh"},
			}, codes.PermissionDenied, "ARTIFACT_OUTSIDE_ROOT"},
			{"docker runtime absent", &pb.InvokeFunctionRequest{
				InvocationType: pb.InvocationType_INVOCATION_TYPE_NEW_TASK, TaskName: "img", ExecutionMode: sync,
				ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "docker", Location: "alpine:3"},
			}, codes.FailedPrecondition, "RUNTIME_UNAVAILABLE"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				for _, mode := range []pb.ExecutionMode{sync, pb.ExecutionMode_EXECUTION_MODE_ASYNC} {
					req := proto.Clone(tc.req).(*pb.InvokeFunctionRequest)
					req.ExecutionMode = mode
					var tr metadata.MD
					_, err := e.grpc.InvokeFunction(testCtx(t), req, grpc.Trailer(&tr))
					code, ec := grpcErrorCode(t, err, tr)
					if code != tc.code || ec != tc.ec {
						t.Errorf("grpc %v: %v %s, want %v %s (%v)", mode, code, ec, tc.code, tc.ec, err)
					}
				}
				_, err := e.connect.InvokeFunction(testCtx(t), tc.req)
				var ce *connect.Error
				if !errors.As(err, &ce) || ce.Code() != connect.Code(tc.code) || ce.Meta().Get(ErrorCodeTrailer) != tc.ec {
					t.Errorf("connect: %v (meta %v), want %v %s", err, ce.Meta(), tc.code, tc.ec)
				}
			})
		}
	})

	t.Run("invalid UTF-8 function name", func(t *testing.T) {
		// proto3 clients refuse to send invalid UTF-8; call the service.
		req := invokeReq("echo", "x", pb.ExecutionMode_EXECUTION_MODE_SYNC)
		req.FunctionName = "f\xff"
		_, err := e.svc.InvokeFunction(testCtx(t), req)
		if errdefs.CodeOf(err) != "INVALID_FUNCTION_NAME" || grpcCode(err) != codes.InvalidArgument {
			t.Errorf("err = %v", err)
		}
	})

	t.Run("sync echo over gRPC", func(t *testing.T) {
		for _, id := range []string{"echo", "wasm-echo"} {
			resp, err := e.grpc.InvokeFunction(testCtx(t), invokeReq(id, "hello "+id, pb.ExecutionMode_EXECUTION_MODE_SYNC))
			if err != nil {
				t.Fatal(err)
			}
			checkSyncOK(t, resp, id, "hello "+id)
		}
	})

	t.Run("sync echo over Connect JSON", func(t *testing.T) {
		resp, err := e.json.InvokeFunction(testCtx(t), invokeReq("upper", "shout", pb.ExecutionMode_EXECUTION_MODE_SYNC))
		if err != nil {
			t.Fatal(err)
		}
		checkSyncOK(t, resp, "upper", "SHOUT")
	})

	t.Run("sync string parameter and environment over Connect", func(t *testing.T) {
		req := invokeReq("env", "", pb.ExecutionMode_EXECUTION_MODE_SYNC)
		req.Parameters = nil
		req.Context = &pb.ExecutionContext{Environment: map[string]string{"NAME": "tester"}}
		resp, err := e.connect.InvokeFunction(testCtx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		checkSyncOK(t, resp, "env", "hello, tester\n")
	})

	t.Run("sync failure is a response", func(t *testing.T) {
		resp, err := e.grpc.InvokeFunction(testCtx(t), invokeReq("fail", "x", pb.ExecutionMode_EXECUTION_MODE_SYNC))
		if err != nil {
			t.Fatal(err)
		}
		r := resp.Result
		if resp.Success || r.Status != pb.ExecutionStatus_EXECUTION_STATUS_FAILED || r.ExitCode != 3 || r.ErrorCode == "" {
			t.Errorf("fail: %v", resp)
		}
	})

	t.Run("new task by invocation then existing", func(t *testing.T) {
		loc := "file://" + filepath.Join(samplesDir(t), "process", "upper.sh")
		req := &pb.InvokeFunctionRequest{
			InvocationType: pb.InvocationType_INVOCATION_TYPE_NEW_TASK, TaskName: "my upper ✓",
			ArtifactSpec:  &pb.ArtifactSpec{ArtifactType: " Process ", Location: loc},
			ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC, Parameters: bytesParam("abc"),
		}
		resp, err := e.grpc.InvokeFunction(testCtx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		checkSyncOK(t, resp, resp.TaskId, "ABC")
		if !strings.HasPrefix(resp.TaskId, "my-upper-") {
			t.Errorf("derived task id %q", resp.TaskId)
		}
		resp2, err := e.connect.InvokeFunction(testCtx(t), invokeReq(resp.TaskId, "def", pb.ExecutionMode_EXECUTION_MODE_SYNC))
		if err != nil {
			t.Fatal(err)
		}
		checkSyncOK(t, resp2, resp.TaskId, "DEF")
		// create_if_not_exists on an unknown id registers it.
		req3 := invokeReq("lazy-echo", "lazy", pb.ExecutionMode_EXECUTION_MODE_SYNC)
		req3.CreateIfNotExists = true
		req3.ArtifactSpec = &pb.ArtifactSpec{ArtifactType: "process", Location: filepath.Join(samplesDir(t), "process", "echo.sh")}
		resp3, err := e.grpc.InvokeFunction(testCtx(t), req3)
		if err != nil {
			t.Fatal(err)
		}
		checkSyncOK(t, resp3, "lazy-echo", "lazy")
	})

	t.Run("async", func(t *testing.T) {
		for name, call := range map[string]func(*pb.InvokeFunctionRequest) (*pb.InvokeFunctionResponse, error){
			"grpc": func(r *pb.InvokeFunctionRequest) (*pb.InvokeFunctionResponse, error) {
				return e.grpc.InvokeFunction(testCtx(t), r)
			},
			"connect": func(r *pb.InvokeFunctionRequest) (*pb.InvokeFunctionResponse, error) {
				return e.json.InvokeFunction(testCtx(t), r)
			},
		} {
			resp, err := call(invokeReq("echo", "later "+name, pb.ExecutionMode_EXECUTION_MODE_ASYNC))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if !resp.Success || resp.Result.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_PENDING || resp.ExecutionId == "" ||
				resp.StatusEndpoint != fmt.Sprintf("/api/v1/executions/%s/status", resp.ExecutionId) || resp.EstimatedCompletionMs <= 0 ||
				resp.TaskId != "echo" || resp.InstanceId != "test-node" {
				t.Errorf("%s: async response %v", name, resp)
			}
			st := waitStatus(t, e, resp.StatusEndpoint)
			if st.Result.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || output(t, st.Result.GetResult()) != "later "+name {
				t.Errorf("%s: final status %v", name, st)
			}
		}
		// wait=true answers with the final result.
		req := invokeReq("echo", "waited", pb.ExecutionMode_EXECUTION_MODE_ASYNC)
		req.Wait = true
		resp, err := e.grpc.InvokeFunction(testCtx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		if !resp.Success || resp.Result.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || output(t, resp.Result.Result) != "waited" || resp.StatusEndpoint == "" {
			t.Errorf("async wait: %v", resp)
		}
	})

	t.Run("caller execution id", func(t *testing.T) {
		req := invokeReq("echo", "mine", pb.ExecutionMode_EXECUTION_MODE_SYNC)
		req.Context = &pb.ExecutionContext{ExecutionId: "my-exec-1"}
		resp, err := e.grpc.InvokeFunction(testCtx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.ExecutionId != "my-exec-1" {
			t.Errorf("execution id %q", resp.ExecutionId)
		}
		st, err := e.grpc.GetExecutionStatus(testCtx(t), &pb.GetExecutionStatusRequest{ExecutionId: "my-exec-1", IncludeResult: true})
		if err != nil || !st.Found || output(t, st.Result.GetResult()) != "mine" {
			t.Errorf("GetExecutionStatus: %v %v", st, err)
		}
	})
}

func checkSyncOK(t *testing.T, resp *pb.InvokeFunctionResponse, taskID, want string) {
	t.Helper()
	r := resp.GetResult()
	if !resp.Success || r.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || resp.TaskId != taskID || resp.ExecutionId == "" {
		t.Fatalf("sync %s: %v", taskID, resp)
	}
	if resp.StatusEndpoint != "" || resp.EstimatedCompletionMs != 0 {
		t.Errorf("sync %s: status_endpoint %q, estimate %d; want none", taskID, resp.StatusEndpoint, resp.EstimatedCompletionMs)
	}
	if got := output(t, r.Result); got != want {
		t.Errorf("sync %s: output %q, want %q", taskID, got, want)
	}
	if r.StartedAt == nil || r.CompletedAt == nil || r.Attempts != 1 || r.ExitCode != 0 || len(r.AttemptHistory) != 1 {
		t.Errorf("sync %s: result lacks times, attempts, exit code or history: %v", taskID, r)
	}
	if len(r.Metrics) != 0 {
		t.Errorf("sync %s: metrics %v; a plain successful run has none", taskID, r.Metrics)
	}
}

func TestStreamFunction(t *testing.T) {
	e := newEnv(t, envOptions{})
	req := invokeReq("ticker", "", pb.ExecutionMode_EXECUTION_MODE_STREAM)
	req.Parameters = nil
	req.Context = &pb.ExecutionContext{Environment: map[string]string{"TICKS": "3"}}
	const want = "tick 1\ntick 2\ntick 3\n"

	check := func(t *testing.T, msgs []*pb.StreamExecutionResult) {
		t.Helper()
		if len(msgs) < 3 {
			t.Fatalf("%d messages, want a pending one, chunks and a final one", len(msgs))
		}
		if msgs[0].Status != pb.ExecutionStatus_EXECUTION_STATUS_PENDING || msgs[0].ExecutionId == "" {
			t.Errorf("first message %v", msgs[0])
		}
		var out strings.Builder
		for i, m := range msgs[1 : len(msgs)-1] {
			if m.IsFinal || m.Status != pb.ExecutionStatus_EXECUTION_STATUS_RUNNING || m.ExecutionId != msgs[0].ExecutionId {
				t.Errorf("chunk %d: %v", i, m)
			}
			if m.Sequence != int64(i) {
				t.Errorf("chunk %d has sequence %d", i, m.Sequence)
			}
			out.WriteString(output(t, m.ChunkData))
		}
		if out.String() != want {
			t.Errorf("chunks = %q, want %q", out.String(), want)
		}
		last := msgs[len(msgs)-1]
		if !last.IsFinal || last.Status != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || last.Metadata["exit_code"] != "0" || last.Metadata["task_id"] != "ticker" {
			t.Errorf("final message %v", last)
		}
	}

	t.Run("grpc", func(t *testing.T) {
		s, err := e.grpc.StreamFunction(testCtx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		var msgs []*pb.StreamExecutionResult
		for {
			m, err := s.Recv()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("Recv: %v", err)
				}
				break
			}
			msgs = append(msgs, m)
		}
		check(t, msgs)
	})
	for name, c := range map[string]interface {
		StreamFunction(context.Context, *pb.InvokeFunctionRequest) (*connect.ServerStreamForClient[pb.StreamExecutionResult], error)
	}{"connect": e.connect, "connect-json": e.json} {
		t.Run(name, func(t *testing.T) {
			s, err := c.StreamFunction(testCtx(t), req)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var msgs []*pb.StreamExecutionResult
			for s.Receive() {
				msgs = append(msgs, proto.Clone(s.Msg()).(*pb.StreamExecutionResult))
			}
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			check(t, msgs)
		})
	}
	t.Run("errors", func(t *testing.T) {
		s, err := e.grpc.StreamFunction(testCtx(t), invokeReq("no-such", "", pb.ExecutionMode_EXECUTION_MODE_STREAM))
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Recv()
		code, ec := grpcErrorCode(t, err, s.Trailer())
		if code != codes.NotFound || ec != "TASK_NOT_FOUND" {
			t.Errorf("grpc: %v %s", code, ec)
		}
		bad := invokeReq("echo", "", pb.ExecutionMode_EXECUTION_MODE_STREAM)
		bad.Context = &pb.ExecutionContext{TimeoutMs: -5}
		cs, err := e.connect.StreamFunction(testCtx(t), bad)
		if err != nil {
			t.Fatal(err)
		}
		for cs.Receive() {
			t.Errorf("unexpected message %v", cs.Msg())
		}
		if connect.CodeOf(cs.Err()) != connect.CodeInvalidArgument {
			t.Errorf("connect: %v", cs.Err())
		}
		var ce *connect.Error
		if errors.As(cs.Err(), &ce) && ce.Meta().Get(ErrorCodeTrailer) != "INVALID_TIMEOUT" {
			t.Errorf("connect meta: %v", ce.Meta())
		}
		cs.Close()
	})
	t.Run("modes", func(t *testing.T) {
		for _, tc := range []struct {
			mode pb.ExecutionMode
			ec   string // "" streams
		}{
			{pb.ExecutionMode_EXECUTION_MODE_UNKNOWN, ""},
			{pb.ExecutionMode_EXECUTION_MODE_SYNC, ""},
			{pb.ExecutionMode_EXECUTION_MODE_ASYNC, "ASYNC_MODE_NOT_SUPPORTED"},
			{42, "UNKNOWN_EXECUTION_MODE"},
		} {
			r := invokeReq("echo", "m", tc.mode)
			s, err := e.grpc.StreamFunction(testCtx(t), r)
			if err != nil {
				t.Fatal(err)
			}
			var last *pb.StreamExecutionResult
			for {
				m, err := s.Recv()
				if err != nil {
					if tc.ec == "" && !errors.Is(err, io.EOF) {
						t.Errorf("%v: %v", tc.mode, err)
					}
					if tc.ec == "" {
						break
					}
					if code, ec := grpcErrorCode(t, err, s.Trailer()); code != codes.InvalidArgument || ec != tc.ec {
						t.Errorf("%v: %v %s, want INVALID_ARGUMENT %s", tc.mode, code, ec, tc.ec)
					}
					break
				}
				last = m
			}
			if tc.ec == "" && (last == nil || last.Status != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED) {
				t.Errorf("%v: last message %v, want COMPLETED", tc.mode, last)
			}
		}
	})
}
