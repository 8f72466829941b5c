package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	goruntime "runtime"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/spear-go/spear/api/spearlet"
)

// Limits of the node TestBadInput runs against, small so that the
// oversized cases stay cheap.
const (
	badMaxInput   = 64 << 10
	badMaxMessage = 256 << 10
)

// badCase is one bad request. call sends it with the trailer option and
// returns the error_code of an answer that refuses it in the response
// (success=false) rather than with an RPC error.
type badCase struct {
	name string
	call func(ctx context.Context, c pb.FunctionServiceClient, tr *metadata.MD) (respCode string, err error)
	// The expected refusal: an RPC error with code and error_code, or,
	// when code is OK, a response with error_code (or success when
	// errorCode is empty too).
	code      codes.Code
	errorCode string
	// transport: refused by the gRPC transport before the service sees
	// it, so no error_code is attached (see TestBadInput).
	transport bool
}

// invokeCall sends an InvokeFunction request built by mk.
func invokeCall(mk func() *pb.InvokeFunctionRequest) func(context.Context, pb.FunctionServiceClient, *metadata.MD) (string, error) {
	return func(ctx context.Context, c pb.FunctionServiceClient, tr *metadata.MD) (string, error) {
		resp, err := c.InvokeFunction(ctx, mk(), grpc.Trailer(tr))
		if err != nil {
			return "", err
		}
		if !resp.GetSuccess() {
			return resp.GetResult().GetErrorCode(), nil
		}
		return "", nil
	}
}

// rpcCall adapts a unary call with no response-level refusal.
func rpcCall[R any](f func(context.Context, pb.FunctionServiceClient, ...grpc.CallOption) (R, error)) func(context.Context, pb.FunctionServiceClient, *metadata.MD) (string, error) {
	return func(ctx context.Context, c pb.FunctionServiceClient, tr *metadata.MD) (string, error) {
		_, err := f(ctx, c, grpc.Trailer(tr))
		return "", err
	}
}

// recvAll drains a server stream and returns its error (nil at EOF).
func recvAll[T any](s interface {
	Recv() (T, error)
	Trailer() metadata.MD
}, tr *metadata.MD) error {
	for {
		if _, err := s.Recv(); err != nil {
			*tr = s.Trailer()
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// rawCodec sends rawMsg bytes as they are, so that a test can send what
// protobuf-go refuses to marshal (invalid UTF-8 in a string field); it
// decodes responses as protobuf.
type rawCodec struct{}

type rawMsg []byte

func (rawCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.(rawMsg); ok {
		return b, nil
	}
	return proto.Marshal(v.(proto.Message))
}

func (rawCodec) Unmarshal(b []byte, v any) error { return proto.Unmarshal(b, v.(proto.Message)) }

func (rawCodec) Name() string { return "proto" }

// withInvalidUTF8 marshals req and replaces every "XXXX" in the encoding
// with four bytes that are not UTF-8 (same length, so the framing holds).
func withInvalidUTF8(t *testing.T, req proto.Message) rawMsg {
	t.Helper()
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("XXXX")) {
		t.Fatal("no XXXX placeholder in the request")
	}
	return bytes.ReplaceAll(b, []byte("XXXX"), []byte{0xff, 0xfe, 0xc0, 0x80})
}

// checkServes fails unless the node answers a sync echo and reports itself
// healthy.
func (n *node) checkServes(t *testing.T) {
	t.Helper()
	resp := n.invoke(t, invocation(t, "echo", pb.ExecutionMode_EXECUTION_MODE_SYNC, []byte("still serving")))
	if !resp.GetSuccess() || output(t, resp.GetResult().GetResult()) != "still serving" {
		t.Fatalf("the next echo: success=%v message=%q output=%q", resp.GetSuccess(), resp.GetMessage(), output(t, resp.GetResult().GetResult()))
	}
	h, err := n.client.GetHealth(ctx(t, callTimeout), &pb.GetHealthRequest{IncludeDetails: true})
	if err != nil || h.GetStatus() != "healthy" {
		t.Fatalf("GetHealth: %v %v", h, err)
	}
}

// TestBadInput sends bad requests of every kind to one node and checks the
// gRPC code, the error_code (ErrorInfo reason and spear-error-code
// trailer), that the message says something, and that the node still
// serves the next request.
//
// Invalid UTF-8 in string fields: protobuf-go refuses to marshal it, so
// those requests are sent as raw bytes through rawCodec. The node's gRPC
// codec decodes them with the bad fields marked, and validation refuses
// them with INVALID_ARGUMENT / INVALID_UTF8 naming the field (grpc-go's own
// decoder would answer INTERNAL). Over Connect JSON the same bytes are
// refused by the JSON decoder with invalid_argument.
func TestBadInput(t *testing.T) {
	n := startNode(t, "", nodeOpts{args: []string{
		"--max-input-bytes", strconv.Itoa(badMaxInput),
		"--max-message-bytes", strconv.Itoa(badMaxMessage),
	}})
	dir := t.TempDir()
	samples := filepath.Join(moduleRoot(), "samples")
	echoPath := filepath.Join(samples, "process", "echo.sh")
	notExec := filepath.Join(dir, "not-exec.sh")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\necho hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	notWasm := filepath.Join(dir, "not.wasm")
	if err := os.WriteFile(notWasm, []byte("#!/bin/sh\nthis is not a wasm module\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	n.registerProcess(t, "dup", echoPath)

	sync := pb.ExecutionMode_EXECUTION_MODE_SYNC
	echo := func(mod func(*pb.InvokeFunctionRequest)) func() *pb.InvokeFunctionRequest {
		return func() *pb.InvokeFunctionRequest {
			r := invocation(t, "echo", sync, []byte("x"))
			mod(r)
			return r
		}
	}
	newTask := func(typ, loc, sum string) func() *pb.InvokeFunctionRequest {
		return func() *pb.InvokeFunctionRequest {
			return &pb.InvokeFunctionRequest{
				InvocationType: pb.InvocationType_INVOCATION_TYPE_NEW_TASK, TaskName: "bad-artifact", ExecutionMode: sync,
				ArtifactSpec: &pb.ArtifactSpec{ArtifactType: typ, Location: loc, Checksum: sum},
			}
		}
	}
	zeroSum := "sha256:" + strings.Repeat("0", 64)
	const unknownID = "000000000000ffffffffff"

	cases := []badCase{
		// Ids.
		{name: "invoke/missing task_id", call: invokeCall(echo(func(r *pb.InvokeFunctionRequest) { r.TaskId = "" })),
			code: codes.InvalidArgument, errorCode: "MISSING_TASK_ID"},
		{name: "invoke/malformed task_id", call: invokeCall(echo(func(r *pb.InvokeFunctionRequest) { r.TaskId = "../etc/passwd" })),
			code: codes.InvalidArgument, errorCode: "INVALID_TASK_ID"},
		{name: "invoke/unknown task_id", call: invokeCall(echo(func(r *pb.InvokeFunctionRequest) { r.TaskId = "no-such-task" })),
			code: codes.NotFound, errorCode: "TASK_NOT_FOUND"},
		{name: "invoke/malformed execution_id", call: invokeCall(echo(func(r *pb.InvokeFunctionRequest) { r.Context.ExecutionId = "a b/c" })),
			code: codes.InvalidArgument, errorCode: "INVALID_EXECUTION_ID"},
		{name: "invoke/execution_id and idempotency_key", call: invokeCall(echo(func(r *pb.InvokeFunctionRequest) {
			r.Context.ExecutionId, r.IdempotencyKey = "abc", "key"
		})), code: codes.InvalidArgument, errorCode: "CONFLICTING_IDS"},
		{name: "status/malformed id", call: rpcCall(func(ctx context.Context, c pb.FunctionServiceClient, o ...grpc.CallOption) (*pb.GetExecutionStatusResponse, error) {
			return c.GetExecutionStatus(ctx, &pb.GetExecutionStatusRequest{ExecutionId: "../x"}, o...)
		}), code: codes.InvalidArgument, errorCode: "INVALID_EXECUTION_ID"},
		{name: "status/missing id", call: rpcCall(func(ctx context.Context, c pb.FunctionServiceClient, o ...grpc.CallOption) (*pb.GetExecutionStatusResponse, error) {
			return c.GetExecutionStatus(ctx, &pb.GetExecutionStatusRequest{}, o...)
		}), code: codes.InvalidArgument, errorCode: "INVALID_EXECUTION_ID"},
		{name: "cancel/unknown id", call: rpcCall(func(ctx context.Context, c pb.FunctionServiceClient, o ...grpc.CallOption) (*pb.CancelExecutionResponse, error) {
			return c.CancelExecution(ctx, &pb.CancelExecutionRequest{ExecutionId: unknownID}, o...)
		}), code: codes.NotFound, errorCode: "EXECUTION_NOT_FOUND"},
		{name: "cancel/missing id", call: rpcCall(func(ctx context.Context, c pb.FunctionServiceClient, o ...grpc.CallOption) (*pb.CancelExecutionResponse, error) {
			return c.CancelExecution(ctx, &pb.CancelExecutionRequest{}, o...)
		}), code: codes.InvalidArgument, errorCode: "INVALID_EXECUTION_ID"},
		{name: "requeue/unknown id", call: rpcCall(func(ctx context.Context, c pb.FunctionServiceClient, o ...grpc.CallOption) (*pb.RequeueExecutionResponse, error) {
			return c.RequeueExecution(ctx, &pb.RequeueExecutionRequest{ExecutionId: unknownID}, o...)
		}), code: codes.NotFound, errorCode: "EXECUTION_NOT_FOUND"},
		{name: "watch/unknown id", call: func(ctx context.Context, c pb.FunctionServiceClient, tr *metadata.MD) (string, error) {
			s, err := c.WatchExecution(ctx, &pb.WatchExecutionRequest{ExecutionId: unknownID})
			if err != nil {
				return "", err
			}
			return "", recvAll(s, tr)
		}, code: codes.NotFound, errorCode: "EXECUTION_NOT_FOUND"},
		{name: "get task/malformed id", call: rpcCall(func(ctx context.Context, c pb.FunctionServiceClient, o ...grpc.CallOption) (*pb.GetTaskResponse, error) {
			return c.GetTask(ctx, &pb.GetTaskRequest{TaskId: "bad id"}, o...)
		}), code: codes.InvalidArgument, errorCode: "INVALID_TASK_ID"},
		{name: "delete task/unknown id", call: rpcCall(func(ctx context.Context, c pb.FunctionServiceClient, o ...grpc.CallOption) (*pb.DeleteTaskResponse, error) {
			return c.DeleteTask(ctx, &pb.DeleteTaskRequest{TaskId: "no-such-task"}, o...)
		}), code: codes.NotFound, errorCode: "TASK_NOT_FOUND"},
		{name: "list executions/malformed task id", call: rpcCall(func(ctx context.Context, c pb.FunctionServiceClient, o ...grpc.CallOption) (*pb.ListExecutionsResponse, error) {
			return c.ListExecutions(ctx, &pb.ListExecutionsRequest{TaskId: "bad/id"}, o...)
		}), code: codes.InvalidArgument, errorCode: "INVALID_TASK_ID"},

		// Enums.
		{name: "invoke/unknown execution_mode", call: invokeCall(echo(func(r *pb.InvokeFunctionRequest) { r.ExecutionMode = 42 })),
			code: codes.OK, errorCode: "UNKNOWN_EXECUTION_MODE"},
		{name: "invoke/stream mode", call: invokeCall(echo(func(r *pb.InvokeFunctionRequest) { r.ExecutionMode = pb.ExecutionMode_EXECUTION_MODE_STREAM })),
			code: codes.OK, errorCode: "STREAM_MODE_NOT_SUPPORTED"},
		{name: "invoke/unknown invocation_type", call: invokeCall(echo(func(r *pb.InvokeFunctionRequest) { r.InvocationType = 9 })),
			code: codes.InvalidArgument, errorCode: "INVALID_INVOCATION_TYPE"},
		{name: "list executions/unknown status_filter", call: rpcCall(func(ctx context.Context, c pb.FunctionServiceClient, o ...grpc.CallOption) (*pb.ListExecutionsResponse, error) {
			return c.ListExecutions(ctx, &pb.ListExecutionsRequest{StatusFilter: 99}, o...)
		}), code: codes.InvalidArgument, errorCode: "INVALID_STATUS_FILTER"},

		// Numbers.
		{name: "invoke/negative timeout", call: invokeCall(echo(func(r *pb.InvokeFunctionRequest) { r.Context.TimeoutMs = -1 })),
			code: codes.InvalidArgument, errorCode: "INVALID_TIMEOUT"},
		// An absurd timeout is capped by --max-timeout: the call runs.
		{name: "invoke/absurd timeout is capped", call: invokeCall(echo(func(r *pb.InvokeFunctionRequest) { r.Context.TimeoutMs = math.MaxInt64 })),
			code: codes.OK},
		{name: "invoke/absurd task timeouts are capped", call: invokeCall(func() *pb.InvokeFunctionRequest {
			r := newTask("process", echoPath, "")()
			r.TaskName, r.Limits = "huge-timeouts", &pb.TaskLimits{DefaultTimeoutMs: math.MaxInt64, MaxTimeoutMs: math.MaxInt64}
			return r
		}), code: codes.OK},
		{name: "invoke/negative max_retries", call: invokeCall(echo(func(r *pb.InvokeFunctionRequest) { r.Context.MaxRetries = -3 })),
			code: codes.InvalidArgument, errorCode: "INVALID_MAX_RETRIES"},
		{name: "invoke/negative limits", call: invokeCall(func() *pb.InvokeFunctionRequest {
			r := newTask("process", echoPath, "")()
			r.TaskName, r.Limits = "neg-limits", &pb.TaskLimits{MaxConcurrency: -1}
			return r
		}), code: codes.InvalidArgument, errorCode: "INVALID_LIMITS"},
		{name: "list tasks/negative limit", call: rpcCall(func(ctx context.Context, c pb.FunctionServiceClient, o ...grpc.CallOption) (*pb.ListTasksResponse, error) {
			return c.ListTasks(ctx, &pb.ListTasksRequest{Limit: -1}, o...)
		}), code: codes.InvalidArgument, errorCode: "INVALID_LIMIT"},
		{name: "stats/negative time range", call: rpcCall(func(ctx context.Context, c pb.FunctionServiceClient, o ...grpc.CallOption) (*pb.GetStatsResponse, error) {
			return c.GetStats(ctx, &pb.GetStatsRequest{TimeRangeHours: -1}, o...)
		}), code: codes.InvalidArgument, errorCode: "INVALID_TIME_RANGE"},

		// Inputs.
		{name: "invoke/oversized input", call: invokeCall(echo(func(r *pb.InvokeFunctionRequest) {
			r.Parameters[0].Value = pb.BytesAny(bytes.Repeat([]byte("i"), badMaxInput+1))
		})), code: codes.ResourceExhausted, errorCode: "INPUT_TOO_LARGE"},
		{name: "invoke/oversized request", call: invokeCall(echo(func(r *pb.InvokeFunctionRequest) {
			r.Parameters[0].Value = pb.BytesAny(bytes.Repeat([]byte("m"), badMaxMessage+1))
		})), code: codes.ResourceExhausted, transport: true},
		{name: "invoke/required parameter without value", call: invokeCall(echo(func(r *pb.InvokeFunctionRequest) {
			r.Parameters = append(r.Parameters, &pb.FunctionParameter{Name: "must", Required: true})
		})), code: codes.InvalidArgument, errorCode: "MISSING_PARAMETER"},
		{name: "invoke/duplicate parameter", call: invokeCall(echo(func(r *pb.InvokeFunctionRequest) {
			r.Parameters = append(r.Parameters, r.Parameters[0])
		})), code: codes.InvalidArgument, errorCode: "DUPLICATE_PARAMETER"},
		{name: "invoke/NUL in function_name", call: invokeCall(echo(func(r *pb.InvokeFunctionRequest) { r.FunctionName = "main\x00" })),
			code: codes.InvalidArgument, errorCode: "INVALID_FUNCTION_NAME"},
		{name: "invoke/'=' in environment name", call: invokeCall(echo(func(r *pb.InvokeFunctionRequest) {
			r.Context.Environment = map[string]string{"A=B": "c"}
		})), code: codes.InvalidArgument, errorCode: "INVALID_ENVIRONMENT"},
		{name: "invoke/bad callback_url", call: invokeCall(echo(func(r *pb.InvokeFunctionRequest) {
			r.ExecutionMode, r.CallbackUrl = pb.ExecutionMode_EXECUTION_MODE_ASYNC, "ftp://example.invalid/x"
		})), code: codes.InvalidArgument, errorCode: "INVALID_CALLBACK_URL"},
		{name: "invoke/callback host not allowed", call: invokeCall(echo(func(r *pb.InvokeFunctionRequest) {
			r.ExecutionMode, r.CallbackUrl = pb.ExecutionMode_EXECUTION_MODE_ASYNC, "http://169.254.169.254/latest/meta-data"
		})), code: codes.PermissionDenied, errorCode: "CALLBACK_NOT_ALLOWED"},
		{name: "stream/unknown task", call: func(ctx context.Context, c pb.FunctionServiceClient, tr *metadata.MD) (string, error) {
			s, err := c.StreamFunction(ctx, invocation(t, "no-such-task", pb.ExecutionMode_EXECUTION_MODE_STREAM, []byte("x")))
			if err != nil {
				return "", err
			}
			return "", recvAll(s, tr)
		}, code: codes.NotFound, errorCode: "TASK_NOT_FOUND"},

		// Artifact specs.
		{name: "artifact/empty spec", call: invokeCall(newTask("", "", "")), code: codes.InvalidArgument, errorCode: "MISSING_ARTIFACT_TYPE"},
		{name: "artifact/no spec", call: invokeCall(func() *pb.InvokeFunctionRequest {
			r := newTask("process", echoPath, "")()
			r.ArtifactSpec = nil
			return r
		}), code: codes.InvalidArgument, errorCode: "MISSING_ARTIFACT_SPEC"},
		{name: "artifact/missing file", call: invokeCall(newTask("process", filepath.Join(dir, "absent.sh"), "")),
			code: codes.FailedPrecondition, errorCode: "ARTIFACT_NOT_FOUND"},
		{name: "artifact/relative path", call: invokeCall(newTask("process", "samples/process/echo.sh", "")),
			code: codes.PermissionDenied, errorCode: "ARTIFACT_OUTSIDE_ROOT"},
		{name: "artifact/outside the roots", call: invokeCall(newTask("process", "/bin/sh", "")),
			code: codes.PermissionDenied, errorCode: "ARTIFACT_OUTSIDE_ROOT"},
		{name: "artifact/NUL byte", call: invokeCall(newTask("process", echoPath+"\x00", "")),
			code: codes.InvalidArgument, errorCode: "INVALID_ARTIFACT_LOCATION"},
		{name: "artifact/not executable", call: invokeCall(newTask("process", notExec, "")),
			code: codes.FailedPrecondition, errorCode: "ARTIFACT_NOT_EXECUTABLE"},
		{name: "artifact/not a wasm module", call: invokeCall(newTask("wasm", notWasm, "")),
			code: codes.InvalidArgument, errorCode: "INVALID_ARTIFACT"},
		{name: "artifact/checksum mismatch", call: invokeCall(newTask("process", echoPath, zeroSum)),
			code: codes.InvalidArgument, errorCode: "CHECKSUM_MISMATCH"},
		{name: "artifact/malformed checksum", call: invokeCall(newTask("process", echoPath, "md5:abc")),
			code: codes.InvalidArgument, errorCode: "INVALID_CHECKSUM"},
		{name: "artifact/unknown type", call: invokeCall(newTask("jar", echoPath, "")),
			code: codes.InvalidArgument, errorCode: "UNKNOWN_ARTIFACT_TYPE"},
		{name: "upload/empty", call: rpcCall(func(ctx context.Context, c pb.FunctionServiceClient, o ...grpc.CallOption) (*pb.UploadArtifactResponse, error) {
			return c.UploadArtifact(ctx, &pb.UploadArtifactRequest{Name: "empty"}, o...)
		}), code: codes.InvalidArgument, errorCode: "EMPTY_ARTIFACT"},
		{name: "upload/checksum mismatch", call: rpcCall(func(ctx context.Context, c pb.FunctionServiceClient, o ...grpc.CallOption) (*pb.UploadArtifactResponse, error) {
			return c.UploadArtifact(ctx, &pb.UploadArtifactRequest{Name: "x", Content: []byte("x"), Checksum: zeroSum}, o...)
		}), code: codes.InvalidArgument, errorCode: "CHECKSUM_MISMATCH"},
		{name: "upload/malformed checksum", call: rpcCall(func(ctx context.Context, c pb.FunctionServiceClient, o ...grpc.CallOption) (*pb.UploadArtifactResponse, error) {
			return c.UploadArtifact(ctx, &pb.UploadArtifactRequest{Name: "x", Content: []byte("x"), Checksum: "sha256:zz"}, o...)
		}), code: codes.InvalidArgument, errorCode: "INVALID_CHECKSUM"},

		// Duplicates.
		{name: "register/duplicate task with another artifact", call: rpcCall(func(ctx context.Context, c pb.FunctionServiceClient, o ...grpc.CallOption) (*pb.RegisterTaskResponse, error) {
			return c.RegisterTask(ctx, &pb.RegisterTaskRequest{TaskId: "dup",
				ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: filepath.Join(samples, "process", "upper.sh")}}, o...)
		}), code: codes.AlreadyExists, errorCode: "TASK_EXISTS"},
		{name: "invoke/new task with a taken name", call: invokeCall(func() *pb.InvokeFunctionRequest {
			r := newTask("process", filepath.Join(samples, "process", "upper.sh"), "")()
			r.TaskName = "dup"
			return r
		}), code: codes.AlreadyExists, errorCode: "TASK_EXISTS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var tr metadata.MD
			respCode, err := tc.call(ctx(t, callTimeout), n.client, &tr)
			switch {
			case tc.code == codes.OK:
				if err != nil {
					t.Fatalf("RPC error %v; want a response", err)
				}
				if respCode != tc.errorCode {
					t.Fatalf("response error_code %q, want %q", respCode, tc.errorCode)
				}
			default:
				e := asRPCError(t, err, tr)
				if e.code != tc.code {
					t.Errorf("code %v, want %v (%s)", e.code, tc.code, e.msg)
				}
				if !tc.transport && (e.reason != tc.errorCode || e.trailer != tc.errorCode) {
					t.Errorf("ErrorInfo reason %q, trailer %q; want %q (%s)", e.reason, e.trailer, tc.errorCode, e.msg)
				}
				if len(e.msg) < 10 {
					t.Errorf("message %q does not tell the caller what to fix", e.msg)
				}
			}
			n.checkServes(t)
		})
	}

	// Invalid UTF-8 in string fields, sent as raw protobuf.
	utf8Cases := []struct {
		name string
		req  *pb.InvokeFunctionRequest
	}{
		{"task_name", &pb.InvokeFunctionRequest{InvocationType: pb.InvocationType_INVOCATION_TYPE_NEW_TASK, TaskName: "bad-XXXX", ExecutionMode: sync,
			ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: echoPath}}},
		{"function_name", &pb.InvokeFunctionRequest{InvocationType: pb.InvocationType_INVOCATION_TYPE_EXISTING_TASK, TaskId: "echo", ExecutionMode: sync,
			FunctionName: "fn-XXXX"}},
		{"environment", &pb.InvokeFunctionRequest{InvocationType: pb.InvocationType_INVOCATION_TYPE_EXISTING_TASK, TaskId: "echo", ExecutionMode: sync,
			Context: &pb.ExecutionContext{Environment: map[string]string{"V": "XXXX"}}}},
	}
	for _, tc := range utf8Cases {
		t.Run("invalid utf-8/grpc/"+tc.name, func(t *testing.T) {
			var resp pb.InvokeFunctionResponse
			var trailer metadata.MD
			err := n.conn.Invoke(ctx(t, callTimeout), "/spearlet.FunctionService/InvokeFunction", withInvalidUTF8(t, tc.req), &resp,
				grpc.ForceCodec(rawCodec{}), grpc.Trailer(&trailer))
			if err == nil {
				t.Fatalf("accepted: %v", &resp)
			}
			got := asRPCError(t, err, trailer)
			if got.code != codes.InvalidArgument || got.reason != "INVALID_UTF8" || got.trailer != "INVALID_UTF8" || !strings.Contains(err.Error(), tc.name) {
				t.Fatalf("refused with %+v (%v); want INVALID_ARGUMENT / INVALID_UTF8 naming %s", got, err, tc.name)
			}
			n.checkServes(t)
		})
		t.Run("invalid utf-8/connect json/"+tc.name, func(t *testing.T) {
			body := connectJSONWithInvalidUTF8(t, tc.req)
			req, err := http.NewRequestWithContext(ctx(t, callTimeout), http.MethodPost, n.httpURL()+"/spearlet.FunctionService/InvokeFunction", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || !bytes.Contains(b, []byte(`"invalid_argument"`)) {
				t.Fatalf("HTTP %d %s; want 400 invalid_argument", resp.StatusCode, b)
			}
			n.checkServes(t)
		})
	}

	// The HTTP routes.
	httpCases := []struct {
		name, method, path string
		status             int
		errorCode          string
	}{
		{"status/bad wait", http.MethodGet, "/api/v1/executions/" + unknownID + "/status?wait=soon", http.StatusBadRequest, "INVALID_WAIT"},
		{"status/malformed id", http.MethodGet, "/api/v1/executions/a%20b/status", http.StatusBadRequest, "INVALID_EXECUTION_ID"},
		{"cancel/unknown id", http.MethodPost, "/api/v1/executions/" + unknownID + "/cancel", http.StatusNotFound, "EXECUTION_NOT_FOUND"},
		{"upload/malformed checksum", http.MethodPut, "/api/v1/artifacts?checksum=sha256:00", http.StatusBadRequest, "INVALID_CHECKSUM"},
	}
	for _, tc := range httpCases {
		t.Run("http/"+tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(ctx(t, callTimeout), tc.method, n.httpURL()+tc.path, strings.NewReader("x"))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || resp.Header.Get("Spear-Error-Code") != tc.errorCode || !bytes.Contains(b, []byte(`"message"`)) {
				t.Fatalf("HTTP %d, Spear-Error-Code %q, body %s; want %d %s", resp.StatusCode, resp.Header.Get("Spear-Error-Code"), b, tc.status, tc.errorCode)
			}
			n.checkServes(t)
		})
	}
}

// connectJSONWithInvalidUTF8 encodes req as the Connect JSON body with
// every XXXX replaced by bytes that are not UTF-8.
func connectJSONWithInvalidUTF8(t *testing.T, req *pb.InvokeFunctionRequest) []byte {
	t.Helper()
	b, err := protojson.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.ReplaceAll(b, []byte("XXXX"), []byte{0xff, 0xfe, 0xc0, 0x80})
}

// TestMisbehaving runs functions that misbehave and checks that each is
// contained: the execution ends as it should, no process it started is
// left, and the node stays healthy. The node's output limit is 1 MiB.
//
// The node runs with the sandbox on (the product default).
//
// Fork bombs: where the node can use the pids cgroup controller (Linux, as
// root, /sys/fs/cgroup/pids writable), a real fork bomb runs, contained by
// a pids limit of 64 (its task's), and ends FAILED with PIDS_LIMIT; it
// only goes off once its shell sees itself in a spear pids cgroup. Elsewhere nothing would bound one (and
// RLIMIT_NPROC does not bind root), so a bounded one (200 children that
// would sleep for minutes) checks that all of them are reaped with the
// group instead.
func TestMisbehaving(t *testing.T) {
	const maxOutput = 1 << 20
	n := startNode(t, "", nodeOpts{sandbox: "auto", args: []string{"--max-output-bytes", strconv.Itoa(maxOutput)}})
	dir := t.TempDir()

	var garbage []byte
	for i := range 4 * 256 {
		garbage = append(garbage, byte(i*7))
	}
	var octal strings.Builder
	for _, c := range garbage {
		fmt.Fprintf(&octal, "\\%03o", c)
	}

	sync, async := pb.ExecutionMode_EXECUTION_MODE_SYNC, pb.ExecutionMode_EXECUTION_MODE_ASYNC
	type misbehaving = struct {
		name      string
		body      string
		mode      pb.ExecutionMode
		input     []byte
		timeoutMs int64
		status    pb.ExecutionStatus
		errorCode string
		output    *string // exact output, when checked
		pidsLimit int64   // the task's pids_limit, when set
		// needles are other command-line fragments of processes the
		// function starts, which must be gone too.
		needles []string
	}
	fork := misbehaving{
		name:   "bounded fork: 200 sleeping children",
		body:   "i=0\nwhile [ $i -lt 200 ]; do (sleep 291.5; :) & i=$((i+1)); done\necho forked\n",
		mode:   sync,
		status: pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED, output: ptr("forked\n"),
		needles: []string{"291.5"},
	}
	if pidsCgroupUsable() {
		fork = misbehaving{
			name: "fork bomb in a pids cgroup",
			// Exit 3 (FUNCTION_FAILED, not PIDS_LIMIT) unless the
			// shell is in a spear pids cgroup.
			body: "i=0\nuntil grep -Eq '(:pids:|^0::).*/spear/' /proc/$$/cgroup; do\n" +
				"\ti=$((i+1)); if [ $i -ge 200 ]; then echo 'no pids cgroup' >&2; exit 3; fi; sleep 0.01\ndone\n" +
				"b() { b | b & }\nb\nexec sleep 294.5\n",
			mode:      sync,
			timeoutMs: 5000,
			pidsLimit: 64,
			status:    pb.ExecutionStatus_EXECUTION_STATUS_FAILED, errorCode: "PIDS_LIMIT",
			needles: []string{"294.5"},
		}
	}
	cases := []misbehaving{
		fork,
		{
			name:      "closes stdout and keeps running",
			body:      "exec >&-\nsleep 292.5\n",
			mode:      sync,
			timeoutMs: 1000,
			status:    pb.ExecutionStatus_EXECUTION_STATUS_TIMEOUT, errorCode: "EXECUTION_TIMEOUT",
			needles: []string{"292.5"},
		},
		{
			name:   "never reads 8 MiB of input",
			body:   "echo started\nsleep 1\necho done\n",
			mode:   sync,
			input:  bytes.Repeat([]byte("8"), 8<<20),
			status: pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED, output: ptr("started\ndone\n"),
		},
		{
			name:   "binary garbage on stdout and stderr",
			body:   "printf '" + octal.String() + "'\nprintf '" + octal.String() + "\\n' >&2\n",
			mode:   sync,
			status: pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED, output: ptr(string(garbage)),
		},
		{
			name:   "background child outlives it",
			body:   "(sleep 293.5; echo late) &\necho parent done\n",
			mode:   async,
			status: pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED, output: ptr("parent done\n"),
			needles: []string{"293.5"},
		},
		{
			name:   "exits before reading input",
			body:   "exit 0\n",
			mode:   sync,
			input:  bytes.Repeat([]byte("e"), 4<<20),
			status: pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED, output: ptr(""),
		},
		{
			name:   "exits with an error before reading input",
			body:   "echo early\nexit 4\n",
			mode:   async,
			input:  bytes.Repeat([]byte("e"), 4<<20),
			status: pb.ExecutionStatus_EXECUTION_STATUS_FAILED, errorCode: "FUNCTION_FAILED",
		},
		{
			name:   "prints without end (sync)",
			body:   "exec yes misbehaving\n",
			mode:   sync,
			status: pb.ExecutionStatus_EXECUTION_STATUS_FAILED, errorCode: "OUTPUT_TOO_LARGE",
		},
		{
			name:   "prints without end (async)",
			body:   "yes misbehaving\n",
			mode:   async,
			status: pb.ExecutionStatus_EXECUTION_STATUS_FAILED, errorCode: "OUTPUT_TOO_LARGE",
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("misbehaving-%d", i)
			path, _ := writeScript(t, dir, id+".sh", tc.body)
			if _, err := n.client.RegisterTask(ctx(t, callTimeout), &pb.RegisterTaskRequest{
				TaskId:       id,
				ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: path},
				Limits:       &pb.TaskLimits{PidsLimit: tc.pidsLimit},
			}); err != nil {
				t.Fatal(err)
			}
			req := invocation(t, id, tc.mode, tc.input)
			req.Context.TimeoutMs = tc.timeoutMs
			resp := n.invoke(t, req)
			res := resp.GetResult()
			if tc.mode == async {
				if !resp.GetSuccess() {
					t.Fatalf("not accepted: %s", resp.GetMessage())
				}
				res = n.waitFinal(t, resp.GetExecutionId(), finishBound).GetResult()
			}
			if res.GetStatus() != tc.status || res.GetErrorCode() != tc.errorCode {
				t.Fatalf("status %v error_code %q (%s); want %v %q", res.GetStatus(), res.GetErrorCode(), res.GetErrorMessage(), tc.status, tc.errorCode)
			}
			out := output(t, res.GetResult())
			if tc.output != nil && out != *tc.output {
				t.Errorf("output %q, want %q", trim(out), trim(*tc.output))
			}
			if len(out) > maxOutput {
				t.Errorf("output of %d bytes passes the limit of %d", len(out), maxOutput)
			}
			// The record, logs included, is still readable (stderr that
			// is not UTF-8 must not break the status call).
			st := n.status(t, resp.GetExecutionId())
			if !st.GetFound() || st.GetResult().GetStatus() != tc.status {
				t.Errorf("GetExecutionStatus: found=%v status=%v", st.GetFound(), st.GetResult().GetStatus())
			}
			for _, needle := range append([]string{path}, tc.needles...) {
				waitNoProcesses(t, needle, finishBound)
			}
			if rss := nodeRSS(t, n); rss > 512<<20 {
				t.Errorf("node RSS %d MiB after the run", rss>>20)
			}
			n.checkServes(t)
		})
	}
}

func ptr[T any](v T) *T { return &v }

// pidsCgroupUsable reports whether a node started by this test can put its
// functions in pids cgroups: on Linux, as root, with the pids hierarchy
// writable (probed by creating and removing a cgroup).
func pidsCgroupUsable() bool {
	if goruntime.GOOS != "linux" || os.Geteuid() != 0 {
		return false
	}
	probe := fmt.Sprintf("/sys/fs/cgroup/pids/spear-e2e-probe-%d", os.Getpid())
	if err := os.Mkdir(probe, 0o755); err != nil {
		return false
	}
	_, err := os.Stat(probe + "/pids.max")
	_ = os.Remove(probe)
	return err == nil
}

func trim(s string) string {
	if len(s) > 80 {
		return fmt.Sprintf("%q... (%d bytes)", s[:80], len(s))
	}
	return s
}

// nodeRSS returns the node process's resident memory in bytes.
func nodeRSS(t *testing.T, n *node) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", n.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("reading the node's status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in the node's status")
	return 0
}
