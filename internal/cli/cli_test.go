package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spear-go/spear/api/spearlet"
)

// fakeServer is an in-process FunctionService that records every request
// and answers through per-method hooks (Unimplemented when a hook is nil).
type fakeServer struct {
	spearlet.UnimplementedFunctionServiceServer

	mu    sync.Mutex
	calls []rpcCall

	invoke     func(context.Context, *spearlet.InvokeFunctionRequest) (*spearlet.InvokeFunctionResponse, error)
	stream     func(*spearlet.InvokeFunctionRequest, grpc.ServerStreamingServer[spearlet.StreamExecutionResult]) error
	status     func(context.Context, *spearlet.GetExecutionStatusRequest) (*spearlet.GetExecutionStatusResponse, error)
	cancel     func(context.Context, *spearlet.CancelExecutionRequest) (*spearlet.CancelExecutionResponse, error)
	listTasks  func(context.Context, *spearlet.ListTasksRequest) (*spearlet.ListTasksResponse, error)
	getTask    func(context.Context, *spearlet.GetTaskRequest) (*spearlet.GetTaskResponse, error)
	deleteTask func(context.Context, *spearlet.DeleteTaskRequest) (*spearlet.DeleteTaskResponse, error)
	listExecs  func(context.Context, *spearlet.ListExecutionsRequest) (*spearlet.ListExecutionsResponse, error)
	health     func(context.Context, *spearlet.GetHealthRequest) (*spearlet.GetHealthResponse, error)
	stats      func(context.Context, *spearlet.GetStatsRequest) (*spearlet.GetStatsResponse, error)
	register   func(context.Context, *spearlet.RegisterTaskRequest) (*spearlet.RegisterTaskResponse, error)
	upload     func(context.Context, *spearlet.UploadArtifactRequest) (*spearlet.UploadArtifactResponse, error)
	limits     func(context.Context, *spearlet.UpdateTaskLimitsRequest) (*spearlet.UpdateTaskLimitsResponse, error)
	update     func(context.Context, *spearlet.UpdateTaskRequest) (*spearlet.UpdateTaskResponse, error)
	requeue    func(context.Context, *spearlet.RequeueExecutionRequest) (*spearlet.RequeueExecutionResponse, error)
	watch      func(*spearlet.WatchExecutionRequest, grpc.ServerStreamingServer[spearlet.ExecutionEvent]) error
}

func (f *fakeServer) WatchExecution(r *spearlet.WatchExecutionRequest, s grpc.ServerStreamingServer[spearlet.ExecutionEvent]) error {
	f.record("WatchExecution", r)
	if f.watch == nil {
		return status.Error(codes.Unimplemented, "fake: WatchExecution not set up")
	}
	return f.watch(r, s)
}

// rpcCall is one recorded request.
type rpcCall struct {
	method string
	req    proto.Message
}

func (f *fakeServer) record(method string, req proto.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, rpcCall{method, proto.Clone(req)})
}

func (f *fakeServer) recorded() []rpcCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]rpcCall(nil), f.calls...)
}

func handle[Req proto.Message, Resp any](ctx context.Context, f *fakeServer, method string, req Req,
	hook func(context.Context, Req) (Resp, error)) (Resp, error) {
	f.record(method, req)
	if hook == nil {
		var zero Resp
		return zero, status.Errorf(codes.Unimplemented, "fake: %s not set up", method)
	}
	return hook(ctx, req)
}

func (f *fakeServer) InvokeFunction(ctx context.Context, r *spearlet.InvokeFunctionRequest) (*spearlet.InvokeFunctionResponse, error) {
	return handle(ctx, f, "InvokeFunction", r, f.invoke)
}

func (f *fakeServer) StreamFunction(r *spearlet.InvokeFunctionRequest, s grpc.ServerStreamingServer[spearlet.StreamExecutionResult]) error {
	f.record("StreamFunction", r)
	if f.stream == nil {
		return status.Error(codes.Unimplemented, "fake: StreamFunction not set up")
	}
	return f.stream(r, s)
}

func (f *fakeServer) GetExecutionStatus(ctx context.Context, r *spearlet.GetExecutionStatusRequest) (*spearlet.GetExecutionStatusResponse, error) {
	return handle(ctx, f, "GetExecutionStatus", r, f.status)
}

func (f *fakeServer) CancelExecution(ctx context.Context, r *spearlet.CancelExecutionRequest) (*spearlet.CancelExecutionResponse, error) {
	return handle(ctx, f, "CancelExecution", r, f.cancel)
}

func (f *fakeServer) ListTasks(ctx context.Context, r *spearlet.ListTasksRequest) (*spearlet.ListTasksResponse, error) {
	return handle(ctx, f, "ListTasks", r, f.listTasks)
}

func (f *fakeServer) GetTask(ctx context.Context, r *spearlet.GetTaskRequest) (*spearlet.GetTaskResponse, error) {
	return handle(ctx, f, "GetTask", r, f.getTask)
}

func (f *fakeServer) DeleteTask(ctx context.Context, r *spearlet.DeleteTaskRequest) (*spearlet.DeleteTaskResponse, error) {
	return handle(ctx, f, "DeleteTask", r, f.deleteTask)
}

func (f *fakeServer) ListExecutions(ctx context.Context, r *spearlet.ListExecutionsRequest) (*spearlet.ListExecutionsResponse, error) {
	return handle(ctx, f, "ListExecutions", r, f.listExecs)
}

func (f *fakeServer) GetHealth(ctx context.Context, r *spearlet.GetHealthRequest) (*spearlet.GetHealthResponse, error) {
	return handle(ctx, f, "GetHealth", r, f.health)
}

func (f *fakeServer) GetStats(ctx context.Context, r *spearlet.GetStatsRequest) (*spearlet.GetStatsResponse, error) {
	return handle(ctx, f, "GetStats", r, f.stats)
}

func (f *fakeServer) RegisterTask(ctx context.Context, r *spearlet.RegisterTaskRequest) (*spearlet.RegisterTaskResponse, error) {
	return handle(ctx, f, "RegisterTask", r, f.register)
}

func (f *fakeServer) UploadArtifact(ctx context.Context, r *spearlet.UploadArtifactRequest) (*spearlet.UploadArtifactResponse, error) {
	return handle(ctx, f, "UploadArtifact", r, f.upload)
}

func (f *fakeServer) UpdateTaskLimits(ctx context.Context, r *spearlet.UpdateTaskLimitsRequest) (*spearlet.UpdateTaskLimitsResponse, error) {
	return handle(ctx, f, "UpdateTaskLimits", r, f.limits)
}

func (f *fakeServer) UpdateTask(ctx context.Context, r *spearlet.UpdateTaskRequest) (*spearlet.UpdateTaskResponse, error) {
	return handle(ctx, f, "UpdateTask", r, f.update)
}

func (f *fakeServer) RequeueExecution(ctx context.Context, r *spearlet.RequeueExecutionRequest) (*spearlet.RequeueExecutionResponse, error) {
	return handle(ctx, f, "RequeueExecution", r, f.requeue)
}

// startFake serves f on 127.0.0.1:0 and returns its address.
func startFake(t *testing.T, f *fakeServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	spearlet.RegisterFunctionServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

type runResult struct {
	code           int
	stdout, stderr string
}

// runCLI runs the CLI against addr (passed through SPEAR_ADDR).
func runCLI(ctx context.Context, addr, stdin string, args ...string) runResult {
	return runCLITTY(ctx, addr, stdin, false, args...)
}

// runCLITTY runs the CLI against addr, its stdout and stderr terminals
// when tty is set.
func runCLITTY(ctx context.Context, addr, stdin string, tty bool, args ...string) runResult {
	var stdout, errb bytes.Buffer
	getenv := func(k string) string {
		if k == "SPEAR_ADDR" {
			return addr
		}
		return ""
	}
	a := newApp(strings.NewReader(stdin), &stdout, &errb, getenv)
	a.isTerminal = func(io.Writer) bool { return tty }
	code := a.run(ctx, args)
	return runResult{code: code, stdout: stdout.String(), stderr: errb.String()}
}

// asyncReply accepts an async invocation as execution id.
func asyncReply(id string) func(context.Context, *spearlet.InvokeFunctionRequest) (*spearlet.InvokeFunctionResponse, error) {
	return func(context.Context, *spearlet.InvokeFunctionRequest) (*spearlet.InvokeFunctionResponse, error) {
		return &spearlet.InvokeFunctionResponse{Success: true, ExecutionId: id, Result: &spearlet.ExecutionResult{Status: stPending}}, nil
	}
}

func execResult(st spearlet.ExecutionStatus, out, code, msg string) *spearlet.ExecutionResult {
	r := &spearlet.ExecutionResult{Status: st, ErrorCode: code, ErrorMessage: msg, ExecutionTimeMs: 12}
	if out != "" {
		r.Result = spearlet.BytesAny([]byte(out))
	}
	return r
}

func syncReply(st spearlet.ExecutionStatus, out, code, msg string) func(context.Context, *spearlet.InvokeFunctionRequest) (*spearlet.InvokeFunctionResponse, error) {
	return func(context.Context, *spearlet.InvokeFunctionRequest) (*spearlet.InvokeFunctionResponse, error) {
		return &spearlet.InvokeFunctionResponse{
			Success:     st == spearlet.ExecutionStatus_EXECUTION_STATUS_COMPLETED,
			ExecutionId: "exec-1",
			TaskId:      "t1",
			Result:      execResult(st, out, code, msg),
		}, nil
	}
}

// invokeReq is the request `spear invoke t1 --mode MODE [--input IN]` sends
// with no other flags; in is nil for no --input.
func invokeReq(mode spearlet.ExecutionMode, in []byte) *spearlet.InvokeFunctionRequest {
	r := &spearlet.InvokeFunctionRequest{
		InvocationType: spearlet.InvocationType_INVOCATION_TYPE_EXISTING_TASK,
		TaskId:         "t1",
		ExecutionMode:  mode,
		Wait:           mode == spearlet.ExecutionMode_EXECUTION_MODE_SYNC,
		Context:        &spearlet.ExecutionContext{},
	}
	if in != nil {
		r.Parameters = []*spearlet.FunctionParameter{{Name: "input", Value: spearlet.BytesAny(in)}}
	}
	return r
}

const (
	stPending   = spearlet.ExecutionStatus_EXECUTION_STATUS_PENDING
	stRunning   = spearlet.ExecutionStatus_EXECUTION_STATUS_RUNNING
	stCompleted = spearlet.ExecutionStatus_EXECUTION_STATUS_COMPLETED
	stFailed    = spearlet.ExecutionStatus_EXECUTION_STATUS_FAILED
	stCancelled = spearlet.ExecutionStatus_EXECUTION_STATUS_CANCELLED
	stTimeout   = spearlet.ExecutionStatus_EXECUTION_STATUS_TIMEOUT

	modeSync   = spearlet.ExecutionMode_EXECUTION_MODE_SYNC
	modeAsync  = spearlet.ExecutionMode_EXECUTION_MODE_ASYNC
	modeStream = spearlet.ExecutionMode_EXECUTION_MODE_STREAM
)

type cliCase struct {
	name  string
	args  []string
	stdin string
	setup func(f *fakeServer)

	tty       bool // stdout and stderr are terminals
	code      int
	stdout    *string  // exact stdout, when set
	stdoutHas []string // substrings of stdout
	stderrHas []string // substrings of stderr
	calls     []rpcCall
	// callsSet: compare calls even when empty (no RPC expected).
	callsSet bool
	check    func(t *testing.T, f *fakeServer, r runResult)
}

func str(s string) *string { return &s }

func runCases(t *testing.T, cases []cliCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeServer{}
			if tc.setup != nil {
				tc.setup(f)
			}
			addr := startFake(t, f)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			r := runCLITTY(ctx, addr, tc.stdin, tc.tty, tc.args...)
			if r.code != tc.code {
				t.Errorf("exit code = %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, tc.code, r.stdout, r.stderr)
			}
			if tc.stdout != nil && r.stdout != *tc.stdout {
				t.Errorf("stdout = %q, want %q", r.stdout, *tc.stdout)
			}
			for _, s := range tc.stdoutHas {
				if !strings.Contains(r.stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, r.stdout)
				}
			}
			for _, s := range tc.stderrHas {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, r.stderr)
				}
			}
			if tc.calls != nil || tc.callsSet {
				compareCalls(t, f.recorded(), tc.calls)
			}
			if tc.check != nil {
				tc.check(t, f, r)
			}
		})
	}
}

func compareCalls(t *testing.T, got, want []rpcCall) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("got %d RPCs %v, want %d %v", len(got), methods(got), len(want), methods(want))
		return
	}
	for i := range want {
		if got[i].method != want[i].method || !proto.Equal(got[i].req, want[i].req) {
			t.Errorf("RPC %d:\n got %s {%s}\nwant %s {%s}", i,
				got[i].method, prototext.Format(got[i].req), want[i].method, prototext.Format(want[i].req))
		}
	}
}

func methods(calls []rpcCall) []string {
	var m []string
	for _, c := range calls {
		m = append(m, c.method)
	}
	return m
}

func TestInvoke(t *testing.T) {
	dir := t.TempDir()
	inFile := filepath.Join(dir, "in.bin")
	if err := os.WriteFile(inFile, []byte{0, 1, 2, 'x'}, 0o644); err != nil {
		t.Fatal(err)
	}
	full := invokeReq(modeSync, []byte("hello"))
	full.FunctionName = "main"
	full.Context = &spearlet.ExecutionContext{
		ExecutionId: "my-exec",
		Environment: map[string]string{"A": "1", "B": "x=y"},
		TimeoutMs:   5000,
		MaxRetries:  2,
	}

	runCases(t, []cliCase{
		{
			name: "sync completed sends every field",
			args: []string{"invoke", "t1", "--input", "hello", "--function", "main", "--timeout-ms", "5000",
				"-e", "A=1", "--env", "B=x=y", "--retries", "2", "--execution-id", "my-exec"},
			setup:  func(f *fakeServer) { f.invoke = syncReply(stCompleted, "HELLO\n", "", "") },
			code:   0,
			stdout: str("HELLO\n"),
			calls:  []rpcCall{{"InvokeFunction", full}},
		},
		{
			name:      "sync failed",
			args:      []string{"invoke", "t1", "--input", "x"},
			setup:     func(f *fakeServer) { f.invoke = syncReply(stFailed, "partial", "EXIT_NONZERO", "exit status 3") },
			code:      1,
			stdout:    str("partial"),
			stderrHas: []string{"error: execution exec-1 failed: exit status 3 (EXIT_NONZERO)\n"},
			calls:     []rpcCall{{"InvokeFunction", invokeReq(modeSync, []byte("x"))}},
		},
		{
			name:      "sync timeout",
			args:      []string{"invoke", "t1", "--timeout-ms", "100"},
			setup:     func(f *fakeServer) { f.invoke = syncReply(stTimeout, "", "EXECUTION_TIMEOUT", "exceeded 100ms") },
			code:      124,
			stderrHas: []string{"timed out: exceeded 100ms (EXECUTION_TIMEOUT)\n"},
		},
		{
			name:      "sync cancelled",
			args:      []string{"invoke", "t1"},
			setup:     func(f *fakeServer) { f.invoke = syncReply(stCancelled, "", "CANCELLED", "by user") },
			code:      130,
			stderrHas: []string{"was cancelled"},
		},
		{
			name:   "input from stdin",
			args:   []string{"invoke", "t1", "--input", "-"},
			stdin:  "from stdin\n",
			setup:  func(f *fakeServer) { f.invoke = syncReply(stCompleted, "ok", "", "") },
			stdout: str("ok"),
			calls:  []rpcCall{{"InvokeFunction", invokeReq(modeSync, []byte("from stdin\n"))}},
		},
		{
			name:  "input from file",
			args:  []string{"invoke", "t1", "-i", "@" + inFile},
			setup: func(f *fakeServer) { f.invoke = syncReply(stCompleted, "ok", "", "") },
			calls: []rpcCall{{"InvokeFunction", invokeReq(modeSync, []byte{0, 1, 2, 'x'})}},
		},
		{
			name:  "no input sends no parameter",
			args:  []string{"invoke", "t1"},
			setup: func(f *fakeServer) { f.invoke = syncReply(stCompleted, "", "", "") },
			calls: []rpcCall{{"InvokeFunction", invokeReq(modeSync, nil)}},
		},
		{
			name:      "missing input file is a usage error",
			args:      []string{"invoke", "t1", "--input", "@" + filepath.Join(dir, "nope")},
			code:      2,
			stderrHas: []string{"--input"},
			callsSet:  true,
		},
		{
			name: "rejected invocation",
			args: []string{"invoke", "t1"},
			setup: func(f *fakeServer) {
				f.invoke = func(context.Context, *spearlet.InvokeFunctionRequest) (*spearlet.InvokeFunctionResponse, error) {
					return &spearlet.InvokeFunctionResponse{Success: false, Message: "no such task",
						Result: &spearlet.ExecutionResult{ErrorCode: "TASK_NOT_FOUND"}}, nil
				}
			},
			code:      1,
			stderrHas: []string{"error: invocation rejected: no such task (TASK_NOT_FOUND)\n"},
		},
		{
			name: "rpc error with error code in trailer",
			args: []string{"invoke", "t1"},
			setup: func(f *fakeServer) {
				f.invoke = func(ctx context.Context, _ *spearlet.InvokeFunctionRequest) (*spearlet.InvokeFunctionResponse, error) {
					_ = grpc.SetTrailer(ctx, metadata.Pairs("spear-error-code", "TASK_NOT_FOUND"))
					return nil, status.Error(codes.NotFound, `task "t1" not found`)
				}
			},
			code:      3,
			stdout:    str(""),
			stderrHas: []string{"error: task \"t1\" not found (TASK_NOT_FOUND)\n"},
		},
		{
			name: "rpc error with error code in status details",
			args: []string{"invoke", "t1"},
			setup: func(f *fakeServer) {
				f.invoke = func(context.Context, *spearlet.InvokeFunctionRequest) (*spearlet.InvokeFunctionResponse, error) {
					st, err := status.New(codes.ResourceExhausted, "queue full").
						WithDetails(&errdetails.ErrorInfo{Reason: "QUEUE_FULL", Domain: "spear"})
					if err != nil {
						return nil, err
					}
					return nil, st.Err()
				}
			},
			code:      1,
			stderrHas: []string{"error: queue full (QUEUE_FULL)\n"},
		},
		{
			name: "async",
			args: []string{"invoke", "t1", "--mode", "async", "--input", "in"},
			setup: func(f *fakeServer) {
				f.invoke = func(context.Context, *spearlet.InvokeFunctionRequest) (*spearlet.InvokeFunctionResponse, error) {
					return &spearlet.InvokeFunctionResponse{Success: true, ExecutionId: "exec-9", TaskId: "t1",
						Result:                &spearlet.ExecutionResult{Status: stPending},
						StatusEndpoint:        "/api/v1/executions/exec-9/status",
						EstimatedCompletionMs: 1500}, nil
				}
			},
			tty:       true,
			stdoutHas: []string{"exec-9", "/api/v1/executions/exec-9/status", "1.5s", "pending", "spear exec wait exec-9"},
			calls:     []rpcCall{{"InvokeFunction", invokeReq(modeAsync, []byte("in"))}},
		},
		{
			name:   "async piped prints only the id",
			args:   []string{"invoke", "t1", "--mode", "async"},
			setup:  func(f *fakeServer) { f.invoke = asyncReply("exec-9") },
			stdout: str("exec-9\n"),
		},
		{
			name:   "async --quiet on a terminal prints only the id",
			args:   []string{"invoke", "t1", "-m", "async", "-q"},
			setup:  func(f *fakeServer) { f.invoke = asyncReply("exec-9") },
			tty:    true,
			stdout: str("exec-9\n"),
		},
		{
			name: "async json",
			args: []string{"--json", "invoke", "t1", "-m", "async"},
			setup: func(f *fakeServer) {
				f.invoke = func(context.Context, *spearlet.InvokeFunctionRequest) (*spearlet.InvokeFunctionResponse, error) {
					return &spearlet.InvokeFunctionResponse{Success: true, ExecutionId: "exec-9",
						StatusEndpoint: "/api/v1/executions/exec-9/status", EstimatedCompletionMs: 1500}, nil
				}
			},
			check: func(t *testing.T, _ *fakeServer, r runResult) {
				var got struct {
					ExecutionID    string `json:"executionId"`
					StatusEndpoint string `json:"statusEndpoint"`
				}
				if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
					t.Fatalf("stdout is not one JSON object: %v\n%s", err, r.stdout)
				}
				if got.ExecutionID != "exec-9" || got.StatusEndpoint == "" {
					t.Errorf("json = %+v", got)
				}
			},
		},
		{
			name: "priority, idempotency key and callback url",
			args: []string{"invoke", "t1", "-m", "async", "--priority", "7", "--idempotency-key", "order-42",
				"--callback-url", "https://hooks.example.com/done?x=1"},
			setup: func(f *fakeServer) {
				f.invoke = func(context.Context, *spearlet.InvokeFunctionRequest) (*spearlet.InvokeFunctionResponse, error) {
					return &spearlet.InvokeFunctionResponse{Success: true, ExecutionId: "exec-9",
						Result: &spearlet.ExecutionResult{Status: stPending}}, nil
				}
			},
			stdout: str("exec-9\n"),
			calls: []rpcCall{{"InvokeFunction", func() *spearlet.InvokeFunctionRequest {
				r := invokeReq(modeAsync, nil)
				r.Priority, r.IdempotencyKey, r.CallbackUrl = 7, "order-42", "https://hooks.example.com/done?x=1"
				return r
			}()}},
		},
		{
			name:  "negative priority is allowed",
			args:  []string{"invoke", "t1", "--priority", "-3"},
			setup: func(f *fakeServer) { f.invoke = syncReply(stCompleted, "ok", "", "") },
			calls: []rpcCall{{"InvokeFunction", func() *spearlet.InvokeFunctionRequest {
				r := invokeReq(modeSync, nil)
				r.Priority = -3
				return r
			}()}},
		},
		{
			name:      "callback url without a scheme is a usage error",
			args:      []string{"invoke", "t1", "--callback-url", "hooks.example.com/done"},
			code:      2,
			stderrHas: []string{"--callback-url", "http"},
			callsSet:  true,
		},
		{
			name:      "callback url with another scheme is a usage error",
			args:      []string{"invoke", "t1", "--callback-url", "ftp://hooks.example.com/done"},
			code:      2,
			stderrHas: []string{"--callback-url"},
			callsSet:  true,
		},
		{
			name:      "bad mode is a usage error",
			args:      []string{"invoke", "t1", "--mode", "later"},
			code:      2,
			stderrHas: []string{"--mode"},
			callsSet:  true,
		},
		{
			name:      "bad env is a usage error",
			args:      []string{"invoke", "t1", "--env", "NOEQUALS"},
			code:      2,
			stderrHas: []string{"KEY=VALUE"},
			callsSet:  true,
		},
		{
			name:      "missing task is a usage error",
			args:      []string{"invoke"},
			code:      2,
			stderrHas: []string{"accepts 1 arg", "spear invoke --help"},
			callsSet:  true,
		},
	})
}

// jsonHas checks that stdout is one JSON object with the given values at
// dotted paths.
func jsonHas(want map[string]any) func(t *testing.T, _ *fakeServer, r runResult) {
	return func(t *testing.T, _ *fakeServer, r runResult) {
		t.Helper()
		var obj map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &obj); err != nil {
			t.Fatalf("stdout is not one JSON object: %v\n%s", err, r.stdout)
		}
		for path, v := range want {
			var cur any = obj
			for _, k := range strings.Split(path, ".") {
				m, _ := cur.(map[string]any)
				cur = m[k]
			}
			if cur != v {
				t.Errorf("%s = %v, want %v\n%s", path, cur, v, r.stdout)
			}
		}
	}
}

// notifyWriter records writes and reports each one on a channel.
type notifyWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes chan string
}

func (w *notifyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.buf.Write(p)
	w.mu.Unlock()
	w.writes <- string(p)
	return len(p), nil
}

func TestInvokeStreamWritesChunksAsTheyArrive(t *testing.T) {
	for _, tc := range []struct {
		name      string
		final     *spearlet.StreamExecutionResult
		code      int
		stderrHas string
	}{
		{"completed", &spearlet.StreamExecutionResult{Status: stCompleted}, 0, ""},
		{"failed", &spearlet.StreamExecutionResult{Status: stFailed, ErrorCode: "EXIT_NONZERO", ErrorMessage: "exit status 1"}, 1, "failed: exit status 1 (EXIT_NONZERO)\n"},
		{"timeout", &spearlet.StreamExecutionResult{Status: stTimeout, ErrorCode: "EXECUTION_TIMEOUT"}, 124, "timed out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &notifyWriter{writes: make(chan string, 16)}
			chunks := []string{"one\n", "two\n", "three\n"}
			f := &fakeServer{}
			f.stream = func(_ *spearlet.InvokeFunctionRequest, s grpc.ServerStreamingServer[spearlet.StreamExecutionResult]) error {
				for i, c := range chunks {
					if err := s.Send(&spearlet.StreamExecutionResult{ExecutionId: "exec-s", Status: stRunning,
						ChunkData: spearlet.BytesAny([]byte(c)), Sequence: int64(i)}); err != nil {
						return err
					}
					// Send the next chunk only once the CLI has written this one:
					// a CLI that buffers until the end would stall here.
					select {
					case got := <-w.writes:
						if got != c {
							return status.Errorf(codes.Internal, "CLI wrote %q, want %q", got, c)
						}
					case <-time.After(5 * time.Second):
						return status.Errorf(codes.DeadlineExceeded, "CLI did not write chunk %d while streaming", i)
					}
				}
				final := proto.Clone(tc.final).(*spearlet.StreamExecutionResult)
				final.ExecutionId, final.IsFinal = "exec-s", true
				return s.Send(final)
			}
			addr := startFake(t, f)
			var errb bytes.Buffer
			getenv := func(k string) string { return map[string]string{addrEnv: addr}[k] }
			code := newApp(strings.NewReader(""), w, &errb, getenv).run(context.Background(),
				[]string{"invoke", "t1", "--mode", "stream", "--input", "go", "--timeout-ms", "8000"})
			if code != tc.code {
				t.Errorf("exit code = %d, want %d; stderr: %s", code, tc.code, errb.String())
			}
			if got := w.buf.String(); got != strings.Join(chunks, "") {
				t.Errorf("stdout = %q", got)
			}
			if !strings.Contains(errb.String(), tc.stderrHas) {
				t.Errorf("stderr = %q, want it to contain %q", errb.String(), tc.stderrHas)
			}
			want := invokeReq(modeStream, []byte("go"))
			want.Context.TimeoutMs = 8000
			compareCalls(t, f.recorded(), []rpcCall{{"StreamFunction", want}})
		})
	}
}

func TestInvokeStreamJSONAndErrors(t *testing.T) {
	runCases(t, []cliCase{
		{
			name: "json lines",
			args: []string{"--json", "invoke", "t1", "-m", "stream"},
			setup: func(f *fakeServer) {
				f.stream = func(_ *spearlet.InvokeFunctionRequest, s grpc.ServerStreamingServer[spearlet.StreamExecutionResult]) error {
					_ = s.Send(&spearlet.StreamExecutionResult{ExecutionId: "e", ChunkData: spearlet.BytesAny([]byte("a"))})
					return s.Send(&spearlet.StreamExecutionResult{ExecutionId: "e", IsFinal: true, Status: stCompleted})
				}
			},
			check: func(t *testing.T, _ *fakeServer, r runResult) {
				lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
				if len(lines) != 2 {
					t.Fatalf("want 2 JSON lines, got %q", r.stdout)
				}
				for _, l := range lines {
					var m map[string]any
					if err := json.Unmarshal([]byte(l), &m); err != nil || m["executionId"] != "e" {
						t.Errorf("line %q: %v %v", l, m, err)
					}
				}
			},
		},
		{
			name: "stream without final message",
			args: []string{"invoke", "t1", "-m", "stream"},
			setup: func(f *fakeServer) {
				f.stream = func(_ *spearlet.InvokeFunctionRequest, s grpc.ServerStreamingServer[spearlet.StreamExecutionResult]) error {
					return s.Send(&spearlet.StreamExecutionResult{ChunkData: spearlet.BytesAny([]byte("a"))})
				}
			},
			code:      1,
			stdout:    str("a"),
			stderrHas: []string{"without a final status"},
		},
		{
			name: "stream rpc error after a chunk",
			args: []string{"invoke", "t1", "-m", "stream"},
			setup: func(f *fakeServer) {
				f.stream = func(_ *spearlet.InvokeFunctionRequest, s grpc.ServerStreamingServer[spearlet.StreamExecutionResult]) error {
					_ = s.Send(&spearlet.StreamExecutionResult{ChunkData: spearlet.BytesAny([]byte("a"))})
					s.SetTrailer(metadata.Pairs("spear-error-code", "NODE_SHUTTING_DOWN"))
					return status.Error(codes.Unavailable, "draining")
				}
			},
			code:      5,
			stdout:    str("a"),
			stderrHas: []string{"error: draining (NODE_SHUTTING_DOWN)\n"},
		},
	})
}

func TestTask(t *testing.T) {
	dir := t.TempDir()
	wasm := filepath.Join(dir, "fn.wasm")
	content := []byte("\x00asm\x01\x00\x00\x00")
	if err := os.WriteFile(wasm, content, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	checksum := "sha256:" + hex.EncodeToString(sum[:])
	relAbs, err := filepath.Abs(filepath.Join("bin", "fn"))
	if err != nil {
		t.Fatal(err)
	}
	registerEcho := func(f *fakeServer) {
		f.register = func(_ context.Context, r *spearlet.RegisterTaskRequest) (*spearlet.RegisterTaskResponse, error) {
			return &spearlet.RegisterTaskResponse{Created: true, Task: &spearlet.TaskInfo{
				TaskId: r.GetTaskName(), TaskName: r.GetTaskName(), ArtifactSpec: r.GetArtifactSpec(), Limits: r.GetLimits(),
				CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixMilli()}}, nil
		}
	}
	page := func(ids ...string) []*spearlet.TaskInfo {
		var ts []*spearlet.TaskInfo
		for _, id := range ids {
			ts = append(ts, &spearlet.TaskInfo{TaskId: id, TaskName: "name-" + id, ExecutionCount: 3,
				LastStatus: stCompleted, ArtifactSpec: &spearlet.ArtifactSpec{ArtifactType: "process"}})
		}
		return ts
	}
	pages := func(f *fakeServer) {
		f.listTasks = func(_ context.Context, r *spearlet.ListTasksRequest) (*spearlet.ListTasksResponse, error) {
			switch r.GetStartAfter() {
			case "":
				return &spearlet.ListTasksResponse{Tasks: page("a", "b"), HasMore: true, NextStartAfter: "b"}, nil
			case "b":
				return &spearlet.ListTasksResponse{Tasks: page("c", "d"), HasMore: true, NextStartAfter: "d"}, nil
			default:
				return &spearlet.ListTasksResponse{Tasks: page("e")}, nil
			}
		}
	}
	listReq := func(after string) *spearlet.ListTasksRequest {
		return &spearlet.ListTasksRequest{Prefix: "x", Limit: 2, StartAfter: after, IncludeDetails: true}
	}

	runCases(t, []cliCase{
		{
			name: "create --upload uploads then registers the returned location",
			args: []string{"task", "create", "hello", "--upload", wasm, "--description", "says hi",
				"--meta", "team=core", "--meta", "tier=1"},
			setup: func(f *fakeServer) {
				f.upload = func(_ context.Context, r *spearlet.UploadArtifactRequest) (*spearlet.UploadArtifactResponse, error) {
					return &spearlet.UploadArtifactResponse{Location: "artifact:" + r.GetChecksum(),
						Checksum: r.GetChecksum(), SizeBytes: int64(len(r.GetContent()))}, nil
				}
				registerEcho(f)
			},
			stdoutHas: []string{"registered task hello", "artifact:" + checksum, "wasm"},
			stderrHas: []string{"uploaded"},
			calls: []rpcCall{
				{"UploadArtifact", &spearlet.UploadArtifactRequest{Name: "fn.wasm", Content: content, Checksum: checksum}},
				{"RegisterTask", &spearlet.RegisterTaskRequest{
					TaskName: "hello", TaskDescription: "says hi",
					ArtifactSpec: &spearlet.ArtifactSpec{ArtifactType: "wasm", Location: "artifact:" + checksum, Checksum: checksum},
					Metadata:     map[string]string{"team": "core", "tier": "1"},
				}},
			},
		},
		{
			name:  "create --location makes a relative path absolute, type process",
			args:  []string{"task", "create", "fn", "--location", filepath.Join("bin", "fn"), "--checksum", "sha256:abc", "--id", "fn-1"},
			setup: registerEcho,
			calls: []rpcCall{{"RegisterTask", &spearlet.RegisterTaskRequest{
				TaskId: "fn-1", TaskName: "fn",
				ArtifactSpec: &spearlet.ArtifactSpec{ArtifactType: "process", Location: relAbs, Checksum: "sha256:abc"},
			}}},
		},
		{
			name:  "create docker keeps the image reference",
			args:  []string{"task", "create", "img", "--location", "alpine:3.20", "--type", "docker"},
			setup: registerEcho,
			calls: []rpcCall{{"RegisterTask", &spearlet.RegisterTaskRequest{
				TaskName: "img", ArtifactSpec: &spearlet.ArtifactSpec{ArtifactType: "docker", Location: "alpine:3.20"},
			}}},
		},
		{
			name: "create already registered, json",
			args: []string{"task", "create", "fn", "--location", "/bin/true", "--json"},
			setup: func(f *fakeServer) {
				f.register = func(context.Context, *spearlet.RegisterTaskRequest) (*spearlet.RegisterTaskResponse, error) {
					return &spearlet.RegisterTaskResponse{Created: false, Task: &spearlet.TaskInfo{TaskId: "fn"}}, nil
				}
			},
			check: jsonHas(map[string]any{"created": false, "task.taskId": "fn"}),
		},
		{
			name: "create with limits",
			args: []string{"task", "create", "lim", "--location", "/bin/cat", "--max-concurrency", "4", "--max-queued", "10",
				"--memory-limit", "64Mi", "--default-timeout", "30s", "--max-timeout", "5m"},
			setup: registerEcho,
			stdoutHas: []string{"registered task lim", "max concurrency:", "4", "max queued:", "10",
				"memory limit:", "64.0 MiB (67108864 bytes)", "default timeout:", "30s", "max timeout:", "5m0s"},
			calls: []rpcCall{{"RegisterTask", &spearlet.RegisterTaskRequest{
				TaskName:     "lim",
				ArtifactSpec: &spearlet.ArtifactSpec{ArtifactType: "process", Location: "/bin/cat"},
				Limits: &spearlet.TaskLimits{MaxConcurrency: 4, MaxQueued: 10, MemoryLimitBytes: 64 << 20,
					DefaultTimeoutMs: 30000, MaxTimeoutMs: 300000},
			}}},
		},
		{
			name:  "create with one limit sends only that one",
			args:  []string{"task", "create", "lim", "--location", "/bin/cat", "--memory-limit", "500M"},
			setup: registerEcho,
			calls: []rpcCall{{"RegisterTask", &spearlet.RegisterTaskRequest{
				TaskName:     "lim",
				ArtifactSpec: &spearlet.ArtifactSpec{ArtifactType: "process", Location: "/bin/cat"},
				Limits:       &spearlet.TaskLimits{MemoryLimitBytes: 500_000_000},
			}}},
		},
		{
			name:  "create with a pids limit and the host network",
			args:  []string{"task", "create", "net", "--location", "/bin/cat", "--pids-limit", "64", "--network", "host"},
			setup: registerEcho,
			calls: []rpcCall{{"RegisterTask", &spearlet.RegisterTaskRequest{
				TaskName:     "net",
				ArtifactSpec: &spearlet.ArtifactSpec{ArtifactType: "process", Location: "/bin/cat"},
				Limits:       &spearlet.TaskLimits{PidsLimit: 64, Network: "host"},
			}}},
		},
		{
			name:  "create with artifact metadata",
			args:  []string{"task", "create", "pre", "--location", "/bin/cat", "--artifact-meta", "prestart=false"},
			setup: registerEcho,
			calls: []rpcCall{{"RegisterTask", &spearlet.RegisterTaskRequest{
				TaskName:     "pre",
				ArtifactSpec: &spearlet.ArtifactSpec{ArtifactType: "process", Location: "/bin/cat", Metadata: map[string]string{"prestart": "false"}},
			}}},
		},
		{
			name:      "create with malformed artifact metadata",
			args:      []string{"task", "create", "x", "--location", "/a", "--artifact-meta", "prestart"},
			code:      2,
			stderrHas: []string{"--artifact-meta"},
			callsSet:  true,
		},
		{
			name:      "create with an unknown network",
			args:      []string{"task", "create", "x", "--location", "/a", "--network", "bridge"},
			code:      2,
			stderrHas: []string{"--network", "want host or sandbox"},
			callsSet:  true,
		},
		{
			name:      "create with a negative pids limit",
			args:      []string{"task", "create", "x", "--location", "/a", "--pids-limit", "-1"},
			code:      2,
			stderrHas: []string{"--pids-limit must not be negative"},
			callsSet:  true,
		},
		{
			name:      "create with a bad memory limit",
			args:      []string{"task", "create", "x", "--location", "/a", "--memory-limit", "64Mb/s"},
			code:      2,
			stderrHas: []string{"--memory-limit", "unknown unit"},
			callsSet:  true,
		},
		{
			name:      "create with a negative max concurrency",
			args:      []string{"task", "create", "x", "--location", "/a", "--max-concurrency", "-1"},
			code:      2,
			stderrHas: []string{"--max-concurrency must not be negative"},
			callsSet:  true,
		},
		{
			name:      "create with a sub-millisecond timeout",
			args:      []string{"task", "create", "x", "--location", "/a", "--default-timeout", "10us"},
			code:      2,
			stderrHas: []string{"--default-timeout", "at least 1ms"},
			callsSet:  true,
		},
		{
			name:      "create with a timeout without unit",
			args:      []string{"task", "create", "x", "--location", "/a", "--max-timeout", "5000"},
			code:      2,
			stderrHas: []string{"max-timeout"},
			callsSet:  true,
		},
		{
			name: "get shows limits",
			args: []string{"task", "get", "t1"},
			setup: func(f *fakeServer) {
				f.getTask = func(context.Context, *spearlet.GetTaskRequest) (*spearlet.GetTaskResponse, error) {
					return &spearlet.GetTaskResponse{Found: true, Task: &spearlet.TaskInfo{TaskId: "t1",
						Limits: &spearlet.TaskLimits{MaxConcurrency: 2, MemoryLimitBytes: 1 << 30, MaxTimeoutMs: 90000}}}, nil
				}
			},
			stdoutHas: []string{"max concurrency:", "memory limit:", "1.0 GiB (1073741824 bytes)", "max timeout:", "1m30s"},
			check: func(t *testing.T, _ *fakeServer, r runResult) {
				// Unset limits are not shown by task get.
				for _, s := range []string{"max queued", "default timeout"} {
					if strings.Contains(r.stdout, s) {
						t.Errorf("stdout shows unset %q:\n%s", s, r.stdout)
					}
				}
			},
			calls: []rpcCall{{"GetTask", &spearlet.GetTaskRequest{TaskId: "t1"}}},
		},
		{
			name: "limits changes only the given flags",
			args: []string{"task", "limits", "t1", "--max-concurrency", "8", "--default-timeout", "0"},
			setup: func(f *fakeServer) {
				taskWithLimits(f, &spearlet.TaskLimits{MaxConcurrency: 2, MaxQueued: 5, MemoryLimitBytes: 1 << 30,
					DefaultTimeoutMs: 10000, MaxTimeoutMs: 60000})
				echoLimits(f)
			},
			stdoutHas: []string{"updated limits of task t1", "max concurrency:", "8", "max queued:", "5",
				"1.0 GiB", "default timeout:  unset", "1m0s"},
			calls: []rpcCall{
				{"GetTask", &spearlet.GetTaskRequest{TaskId: "t1"}},
				{"UpdateTaskLimits", &spearlet.UpdateTaskLimitsRequest{TaskId: "t1", Limits: &spearlet.TaskLimits{
					MaxConcurrency: 8, MaxQueued: 5, MemoryLimitBytes: 1 << 30, MaxTimeoutMs: 60000}}},
			},
		},
		{
			name: "limits of a task without limits",
			args: []string{"task", "limits", "t1", "--memory-limit", "1.5Gi", "--max-queued", "3"},
			setup: func(f *fakeServer) {
				taskWithLimits(f, nil)
				echoLimits(f)
			},
			stdoutHas: []string{"updated limits of task t1", "1.5 GiB"},
			calls: []rpcCall{
				{"GetTask", &spearlet.GetTaskRequest{TaskId: "t1"}},
				{"UpdateTaskLimits", &spearlet.UpdateTaskLimitsRequest{TaskId: "t1", Limits: &spearlet.TaskLimits{
					MaxQueued: 3, MemoryLimitBytes: 3 << 29}}},
			},
		},
		{
			name:      "limits without flags shows the current limits",
			args:      []string{"task", "limits", "t1"},
			setup:     func(f *fakeServer) { taskWithLimits(f, &spearlet.TaskLimits{MaxQueued: 5}) },
			stdoutHas: []string{"task id:", "t1", "max queued:", "5", "max concurrency:  unset"},
			calls:     []rpcCall{{"GetTask", &spearlet.GetTaskRequest{TaskId: "t1"}}},
		},
		{
			name: "limits --json prints the update response",
			args: []string{"--json", "task", "limits", "t1", "--max-concurrency", "3"},
			setup: func(f *fakeServer) {
				taskWithLimits(f, nil)
				echoLimits(f)
			},
			check: jsonHas(map[string]any{"task.taskId": "t1", "task.limits.maxConcurrency": float64(3),
				"task.limits.memoryLimitBytes": "0"}),
		},
		{
			name: "limits of a missing task",
			args: []string{"task", "limits", "nope", "--max-queued", "1"},
			setup: func(f *fakeServer) {
				f.getTask = func(context.Context, *spearlet.GetTaskRequest) (*spearlet.GetTaskResponse, error) {
					return &spearlet.GetTaskResponse{Found: false}, nil
				}
			},
			code:      3,
			stderrHas: []string{"error: task \"nope\" not found (TASK_NOT_FOUND)\n"},
			calls:     []rpcCall{{"GetTask", &spearlet.GetTaskRequest{TaskId: "nope"}}},
		},
		{
			name: "limits rejected by the node",
			args: []string{"task", "limits", "t1", "--default-timeout", "2m"},
			setup: func(f *fakeServer) {
				taskWithLimits(f, &spearlet.TaskLimits{MaxTimeoutMs: 60000})
				f.limits = func(ctx context.Context, _ *spearlet.UpdateTaskLimitsRequest) (*spearlet.UpdateTaskLimitsResponse, error) {
					_ = grpc.SetTrailer(ctx, metadata.Pairs("spear-error-code", "INVALID_LIMITS"))
					return nil, status.Error(codes.InvalidArgument, "default_timeout_ms 120000 exceeds max_timeout_ms 60000")
				}
			},
			code:      2,
			stderrHas: []string{"(INVALID_LIMITS)\n"},
		},
		{
			name:      "limits with a bad flag makes no call",
			args:      []string{"task", "limits", "t1", "--memory-limit", "lots"},
			code:      2,
			stderrHas: []string{"--memory-limit"},
			callsSet:  true,
		},
		{
			name:      "create --upload with a wrong --checksum uploads nothing",
			args:      []string{"task", "create", "x", "--upload", wasm, "--checksum", "sha256:00"},
			code:      2,
			stderrHas: []string{"does not match"},
			callsSet:  true,
		},
		{
			name:      "create needs --location or --upload",
			args:      []string{"task", "create", "x"},
			code:      2,
			stderrHas: []string{"location", "upload"},
			callsSet:  true,
		},
		{
			name:      "create with both --location and --upload",
			args:      []string{"task", "create", "x", "--location", "/a", "--upload", wasm},
			code:      2,
			callsSet:  true,
			stderrHas: []string{"none of the others"},
		},
		{
			name:      "create with a bad type",
			args:      []string{"task", "create", "x", "--location", "/a", "--type", "jar"},
			code:      2,
			callsSet:  true,
			stderrHas: []string{"--type"},
		},
		{
			name:      "list --all follows pagination",
			args:      []string{"task", "list", "--prefix", "x", "--limit", "2", "--all"},
			setup:     pages,
			stdoutHas: []string{"TASK ID", "name-a", "name-c", "name-e", "completed"},
			calls:     []rpcCall{{"ListTasks", listReq("")}, {"ListTasks", listReq("b")}, {"ListTasks", listReq("d")}},
			check: func(t *testing.T, _ *fakeServer, r runResult) {
				lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
				if len(lines) != 6 {
					t.Errorf("want header + 5 rows, got:\n%s", r.stdout)
				}
				if strings.Contains(r.stderr, "more tasks") {
					t.Errorf("unexpected more hint: %s", r.stderr)
				}
			},
		},
		{
			name:      "list without --all shows one page",
			args:      []string{"task", "list", "--prefix", "x", "--limit", "2"},
			setup:     pages,
			stdoutHas: []string{"name-a", "name-b"},
			stderrHas: []string{"--all"},
			calls:     []rpcCall{{"ListTasks", listReq("")}},
		},
		{
			name:  "list --all --json merges pages",
			args:  []string{"task", "list", "--prefix", "x", "--limit", "2", "--all", "--json"},
			setup: pages,
			check: func(t *testing.T, _ *fakeServer, r runResult) {
				var got struct {
					Tasks []struct {
						TaskID string `json:"taskId"`
					} `json:"tasks"`
					HasMore bool `json:"hasMore"`
				}
				if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
					t.Fatalf("%v: %s", err, r.stdout)
				}
				if len(got.Tasks) != 5 || got.HasMore {
					t.Errorf("got %+v", got)
				}
			},
		},
		{
			name: "get with executions",
			args: []string{"task", "get", "t1", "--executions", "3"},
			setup: func(f *fakeServer) {
				f.getTask = func(context.Context, *spearlet.GetTaskRequest) (*spearlet.GetTaskResponse, error) {
					return &spearlet.GetTaskResponse{Found: true,
						Task: &spearlet.TaskInfo{TaskId: "t1", TaskName: "hello", Metadata: map[string]string{"k": "v"},
							ArtifactSpec: &spearlet.ArtifactSpec{ArtifactType: "process", Location: "/bin/cat"}},
						Executions: []*spearlet.ExecutionInfo{{ExecutionId: "exec-7", TaskId: "t1", Status: stFailed,
							ExecutionMode: modeAsync, ErrorCode: "EXIT_NONZERO", ExecutionTimeMs: 1500,
							StartedAt: timestamppb.New(time.Unix(1700000000, 0))}}}, nil
				}
			},
			stdoutHas: []string{"/bin/cat", "k=v", "exec-7", "failed", "async", "EXIT_NONZERO", "1.5s",
				time.Unix(1700000000, 0).Local().Format(time.RFC3339)},
			calls: []rpcCall{{"GetTask", &spearlet.GetTaskRequest{TaskId: "t1", IncludeExecutions: true, ExecutionLimit: 3}}},
		},
		{
			name: "get not found",
			args: []string{"task", "get", "nope"},
			setup: func(f *fakeServer) {
				f.getTask = func(context.Context, *spearlet.GetTaskRequest) (*spearlet.GetTaskResponse, error) {
					return &spearlet.GetTaskResponse{Found: false}, nil
				}
			},
			code:      3,
			stderrHas: []string{"error: task \"nope\" not found (TASK_NOT_FOUND)\n"},
		},
		{
			name: "delete --force --cleanup",
			args: []string{"task", "delete", "t1", "--force", "--cleanup"},
			setup: func(f *fakeServer) {
				f.deleteTask = func(context.Context, *spearlet.DeleteTaskRequest) (*spearlet.DeleteTaskResponse, error) {
					return &spearlet.DeleteTaskResponse{Success: true, Deleted: true, CleanedExecutions: 4}, nil
				}
			},
			stdout: str("deleted task t1 (cleaned 4 executions)\n"),
			calls:  []rpcCall{{"DeleteTask", &spearlet.DeleteTaskRequest{TaskId: "t1", Force: true, CleanupExecutions: true}}},
		},
		{
			name: "delete refused",
			args: []string{"task", "delete", "t1"},
			setup: func(f *fakeServer) {
				f.deleteTask = func(context.Context, *spearlet.DeleteTaskRequest) (*spearlet.DeleteTaskResponse, error) {
					return &spearlet.DeleteTaskResponse{Success: false, Message: "2 executions running"}, nil
				}
			},
			code:      1,
			stderrHas: []string{"not deleted: 2 executions running"},
		},
		{
			name: "delete rpc error",
			args: []string{"task", "delete", "t1"},
			setup: func(f *fakeServer) {
				f.deleteTask = func(context.Context, *spearlet.DeleteTaskRequest) (*spearlet.DeleteTaskResponse, error) {
					return nil, status.Error(codes.FailedPrecondition, "task has running executions")
				}
			},
			code:      1,
			stderrHas: []string{"error: task has running executions (FAILED_PRECONDITION)\n"},
		},
	})
}

// taskWithLimits makes GetTask answer task t1 with limits l.
func taskWithLimits(f *fakeServer, l *spearlet.TaskLimits) {
	f.getTask = func(_ context.Context, r *spearlet.GetTaskRequest) (*spearlet.GetTaskResponse, error) {
		return &spearlet.GetTaskResponse{Found: true, Task: &spearlet.TaskInfo{TaskId: r.GetTaskId(), Limits: l}}, nil
	}
}

// echoLimits makes UpdateTaskLimits answer with the limits it was sent.
func echoLimits(f *fakeServer) {
	f.limits = func(_ context.Context, r *spearlet.UpdateTaskLimitsRequest) (*spearlet.UpdateTaskLimitsResponse, error) {
		return &spearlet.UpdateTaskLimitsResponse{Task: &spearlet.TaskInfo{TaskId: r.GetTaskId(), Limits: r.GetLimits()}}, nil
	}
}

// statusSequence answers GetExecutionStatus with each result in turn,
// repeating the last one.
func statusSequence(results ...*spearlet.ExecutionResult) func(context.Context, *spearlet.GetExecutionStatusRequest) (*spearlet.GetExecutionStatusResponse, error) {
	var mu sync.Mutex
	i := 0
	return func(context.Context, *spearlet.GetExecutionStatusRequest) (*spearlet.GetExecutionStatusResponse, error) {
		mu.Lock()
		defer mu.Unlock()
		r := results[min(i, len(results)-1)]
		i++
		return &spearlet.GetExecutionStatusResponse{Found: true, Result: r}, nil
	}
}

func TestExec(t *testing.T) {
	waitReq := &spearlet.GetExecutionStatusRequest{ExecutionId: "exec-1", IncludeResult: true}
	wantPolls := func(n int) func(t *testing.T, f *fakeServer, r runResult) {
		return func(t *testing.T, f *fakeServer, r runResult) {
			var calls []rpcCall
			for _, c := range f.recorded() {
				if c.method != "WatchExecution" { // tried first; the fake lacks it
					calls = append(calls, c)
				}
			}
			if len(calls) != n {
				t.Errorf("got %d polls, want %d", len(calls), n)
			}
			for _, c := range calls {
				if c.method != "GetExecutionStatus" || !proto.Equal(c.req, waitReq) {
					t.Errorf("unexpected poll %s {%s}", c.method, prototext.Format(c.req))
				}
			}
		}
	}
	runCases(t, []cliCase{
		{
			name: "get --logs",
			args: []string{"exec", "get", "exec-1", "--logs"},
			setup: func(f *fakeServer) {
				f.status = func(context.Context, *spearlet.GetExecutionStatusRequest) (*spearlet.GetExecutionStatusResponse, error) {
					r := execResult(stCompleted, "line1\nline2\n", "", "")
					r.Attempts, r.ExitCode = 2, 0
					return &spearlet.GetExecutionStatusResponse{Found: true, Result: r, Logs: []string{"log-a", "log-b"}}, nil
				}
			},
			stdoutHas: []string{"status:", "completed", "attempts:", "  line1\n  line2\n", "logs:\n  log-a\n  log-b\n"},
			calls:     []rpcCall{{"GetExecutionStatus", &spearlet.GetExecutionStatusRequest{ExecutionId: "exec-1", IncludeResult: true, IncludeLogs: true}}},
		},
		{
			name: "get not found",
			args: []string{"exec", "get", "nope"},
			setup: func(f *fakeServer) {
				f.status = func(context.Context, *spearlet.GetExecutionStatusRequest) (*spearlet.GetExecutionStatusResponse, error) {
					return &spearlet.GetExecutionStatusResponse{Found: false}, nil
				}
			},
			code:      3,
			stderrHas: []string{"error: execution \"nope\" not found (EXECUTION_NOT_FOUND)\n"},
		},
		{
			name: "list with filters",
			args: []string{"exec", "list", "--task", "t1", "--status", "failed", "--limit", "5"},
			setup: func(f *fakeServer) {
				f.listExecs = func(context.Context, *spearlet.ListExecutionsRequest) (*spearlet.ListExecutionsResponse, error) {
					return &spearlet.ListExecutionsResponse{Executions: []*spearlet.ExecutionInfo{
						{ExecutionId: "exec-1", TaskId: "t1", Status: stFailed, ExecutionMode: modeSync, ErrorMessage: "boom"},
						{ExecutionId: "exec-2", TaskId: "t1", Status: stFailed, ExecutionMode: modeStream, ErrorCode: "EXIT_NONZERO"},
					}}, nil
				}
			},
			stdoutHas: []string{"EXECUTION ID", "exec-1", "exec-2", "failed", "sync", "stream", "boom", "EXIT_NONZERO"},
			calls: []rpcCall{{"ListExecutions", &spearlet.ListExecutionsRequest{TaskId: "t1", Limit: 5,
				StatusFilter: stFailed}}},
		},
		{
			name: "list --dead-letter",
			args: []string{"exec", "list", "--dead-letter", "--task", "t1"},
			setup: func(f *fakeServer) {
				f.listExecs = func(context.Context, *spearlet.ListExecutionsRequest) (*spearlet.ListExecutionsResponse, error) {
					return &spearlet.ListExecutionsResponse{Executions: []*spearlet.ExecutionInfo{
						{ExecutionId: "exec-d", TaskId: "t1", Status: stFailed, ExecutionMode: modeAsync,
							ErrorCode: "RETRIES_EXHAUSTED", DeadLettered: true, Attempts: 3},
					}}, nil
				}
			},
			check: func(t *testing.T, _ *fakeServer, r runResult) {
				lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
				if len(lines) != 2 {
					t.Fatalf("want header + 1 row:\n%s", r.stdout)
				}
				head, fields := strings.Fields(lines[0]), strings.Fields(lines[1])
				// "EXECUTION ID" is two header words.
				if i := slices.Index(head, "DEAD"); i < 1 || len(fields) <= i-1 || fields[i-1] != "yes" {
					t.Errorf("DEAD column does not say yes:\n%s", r.stdout)
				}
			},
			calls: []rpcCall{{"ListExecutions", &spearlet.ListExecutionsRequest{TaskId: "t1", DeadLetteredOnly: true}}},
		},
		{
			name: "list marks only dead-lettered executions",
			args: []string{"exec", "list"},
			setup: func(f *fakeServer) {
				f.listExecs = func(context.Context, *spearlet.ListExecutionsRequest) (*spearlet.ListExecutionsResponse, error) {
					return &spearlet.ListExecutionsResponse{Executions: []*spearlet.ExecutionInfo{
						{ExecutionId: "exec-ok", TaskId: "t1", Status: stCompleted, ExecutionMode: modeSync},
					}}, nil
				}
			},
			check: func(t *testing.T, _ *fakeServer, r runResult) {
				if strings.Contains(r.stdout, "yes") {
					t.Errorf("completed execution marked dead:\n%s", r.stdout)
				}
			},
			calls: []rpcCall{{"ListExecutions", &spearlet.ListExecutionsRequest{}}},
		},
		{
			name: "get shows attempt history, dead letter and callback",
			args: []string{"exec", "get", "exec-1"},
			setup: func(f *fakeServer) {
				t0 := time.Unix(1700000000, 0)
				f.status = func(context.Context, *spearlet.GetExecutionStatusRequest) (*spearlet.GetExecutionStatusResponse, error) {
					r := execResult(stFailed, "", "RETRIES_EXHAUSTED", "exit status 1")
					r.Attempts, r.DeadLettered = 2, true
					r.AttemptHistory = []*spearlet.AttemptInfo{
						{Attempt: 1, Status: stFailed, ErrorCode: "EXIT_NONZERO", ErrorMessage: "exit status 1", Node: "node-a",
							StartedAt: timestamppb.New(t0), CompletedAt: timestamppb.New(t0.Add(1500*time.Millisecond + 123*time.Microsecond))},
						{Attempt: 2, Status: stTimeout, ErrorCode: "EXECUTION_TIMEOUT", Node: "node-b",
							StartedAt: timestamppb.New(t0.Add(3 * time.Second))},
					}
					r.Callback = &spearlet.CallbackDelivery{Url: "https://hooks.example.com/done", State: "delivered",
						Attempts: 2, LastStatusCode: 200, DeliveredAt: timestamppb.New(t0.Add(5 * time.Second))}
					return &spearlet.GetExecutionStatusResponse{Found: true, Result: r}, nil
				}
			},
			stdoutHas: []string{"dead-lettered:", "spear exec requeue exec-1", "attempt history:", "STATUS",
				"EXIT_NONZERO: exit status 1", "node-a", "1.5s ", "timeout", "EXECUTION_TIMEOUT", "node-b",
				"callback:", "delivered (2 attempts, HTTP 200)", "https://hooks.example.com/done",
				"callback delivered:", time.Unix(1700000005, 0).Local().Format(time.RFC3339)},
		},
		{
			name: "get shows a failed callback",
			args: []string{"exec", "get", "exec-1"},
			setup: func(f *fakeServer) {
				f.status = func(context.Context, *spearlet.GetExecutionStatusRequest) (*spearlet.GetExecutionStatusResponse, error) {
					r := execResult(stCompleted, "ok", "", "")
					r.Callback = &spearlet.CallbackDelivery{Url: "http://127.0.0.1:9/cb", State: "failed",
						Attempts: 1, LastError: "connection refused"}
					return &spearlet.GetExecutionStatusResponse{Found: true, Result: r}, nil
				}
			},
			stdoutHas: []string{"callback:", "failed (1 attempt)", "callback error:", "connection refused"},
			check: func(t *testing.T, _ *fakeServer, r runResult) {
				for _, s := range []string{"attempt history", "dead-lettered", "callback delivered"} {
					if strings.Contains(r.stdout, s) {
						t.Errorf("stdout shows %q:\n%s", s, r.stdout)
					}
				}
			},
		},
		{
			name: "requeue",
			args: []string{"exec", "requeue", "exec-1"},
			setup: func(f *fakeServer) {
				f.requeue = func(_ context.Context, r *spearlet.RequeueExecutionRequest) (*spearlet.RequeueExecutionResponse, error) {
					return &spearlet.RequeueExecutionResponse{Success: true, ExecutionId: r.GetExecutionId(), Status: stPending}, nil
				}
			},
			stdout: str("requeued execution exec-1 (pending); follow it with: spear exec wait exec-1\n"),
			calls:  []rpcCall{{"RequeueExecution", &spearlet.RequeueExecutionRequest{ExecutionId: "exec-1"}}},
		},
		{
			name: "requeue under a new id",
			args: []string{"exec", "requeue", "exec-1"},
			setup: func(f *fakeServer) {
				f.requeue = func(context.Context, *spearlet.RequeueExecutionRequest) (*spearlet.RequeueExecutionResponse, error) {
					return &spearlet.RequeueExecutionResponse{Success: true, ExecutionId: "exec-2", Status: stPending, Message: "queued"}, nil
				}
			},
			stdout: str("requeued execution exec-1 as exec-2 (pending); follow it with: spear exec wait exec-2\n"),
		},
		{
			name: "requeue refused",
			args: []string{"exec", "requeue", "exec-1"},
			setup: func(f *fakeServer) {
				f.requeue = func(context.Context, *spearlet.RequeueExecutionRequest) (*spearlet.RequeueExecutionResponse, error) {
					return &spearlet.RequeueExecutionResponse{Success: false, ExecutionId: "exec-1", Status: stCompleted,
						Message: "execution is not dead-lettered"}, nil
				}
			},
			code:      1,
			stdout:    str(""),
			stderrHas: []string{"execution exec-1 not requeued: execution is not dead-lettered"},
		},
		{
			name: "requeue refused, json",
			args: []string{"--json", "exec", "requeue", "exec-1"},
			setup: func(f *fakeServer) {
				f.requeue = func(context.Context, *spearlet.RequeueExecutionRequest) (*spearlet.RequeueExecutionResponse, error) {
					return &spearlet.RequeueExecutionResponse{Success: false, Status: stCompleted}, nil
				}
			},
			code:  1,
			check: jsonHas(map[string]any{"success": false, "status": "EXECUTION_STATUS_COMPLETED"}),
		},
		{
			name: "requeue of an execution that is not dead-lettered",
			args: []string{"exec", "requeue", "exec-1"},
			setup: func(f *fakeServer) {
				f.requeue = func(ctx context.Context, _ *spearlet.RequeueExecutionRequest) (*spearlet.RequeueExecutionResponse, error) {
					_ = grpc.SetTrailer(ctx, metadata.Pairs("spear-error-code", "NOT_DEAD_LETTERED"))
					return nil, status.Error(codes.FailedPrecondition, "execution is COMPLETED, not dead-lettered")
				}
			},
			code:      1,
			stderrHas: []string{"error: execution is COMPLETED, not dead-lettered (NOT_DEAD_LETTERED)\n"},
		},
		{
			name: "requeue rpc error",
			args: []string{"exec", "requeue", "nope"},
			setup: func(f *fakeServer) {
				f.requeue = func(context.Context, *spearlet.RequeueExecutionRequest) (*spearlet.RequeueExecutionResponse, error) {
					return nil, status.Error(codes.NotFound, `execution "nope" not found`)
				}
			},
			code:      3,
			stderrHas: []string{"error: execution \"nope\" not found (NOT_FOUND)\n"},
		},
		{
			name:      "requeue needs an id",
			args:      []string{"exec", "requeue"},
			code:      2,
			stderrHas: []string{"accepts 1 arg"},
			callsSet:  true,
		},
		{
			name:      "list with a bad status",
			args:      []string{"exec", "list", "--status", "done"},
			code:      2,
			stderrHas: []string{"--status"},
			callsSet:  true,
		},
		{
			name: "cancel",
			args: []string{"exec", "cancel", "exec-1", "--reason", "no longer needed", "--force"},
			setup: func(f *fakeServer) {
				f.cancel = func(context.Context, *spearlet.CancelExecutionRequest) (*spearlet.CancelExecutionResponse, error) {
					return &spearlet.CancelExecutionResponse{Success: true, FinalStatus: stCancelled}, nil
				}
			},
			stdout: str("cancelled execution exec-1\n"),
			calls: []rpcCall{{"CancelExecution", &spearlet.CancelExecutionRequest{ExecutionId: "exec-1",
				Reason: "no longer needed", Force: true}}},
		},
		{
			name: "cancel refused",
			args: []string{"exec", "cancel", "exec-1"},
			setup: func(f *fakeServer) {
				f.cancel = func(context.Context, *spearlet.CancelExecutionRequest) (*spearlet.CancelExecutionResponse, error) {
					return &spearlet.CancelExecutionResponse{Success: false, Message: "already completed", FinalStatus: stCompleted}, nil
				}
			},
			code:      1,
			stderrHas: []string{"not cancelled: already completed"},
		},
		{
			name: "wait polls until completed",
			args: []string{"exec", "wait", "exec-1", "--poll", "1ms"},
			setup: func(f *fakeServer) {
				f.status = statusSequence(execResult(stPending, "", "", ""), execResult(stRunning, "", "", ""),
					execResult(stRunning, "", "", ""), execResult(stCompleted, "result!", "", ""))
			},
			stdout:    str("result!"),
			stderrHas: []string{"exec-1: pending", "exec-1: running", "exec-1: completed"},
			check: func(t *testing.T, f *fakeServer, r runResult) {
				wantPolls(4)(t, f, r)
				if n := strings.Count(r.stderr, "running"); n != 1 {
					t.Errorf("status change printed %d times, want once:\n%s", n, r.stderr)
				}
			},
		},
		{
			name: "wait failed",
			args: []string{"exec", "wait", "exec-1", "--poll", "1ms"},
			setup: func(f *fakeServer) {
				f.status = statusSequence(execResult(stRunning, "", "", ""), execResult(stFailed, "", "EXIT_NONZERO", "exit status 2"))
			},
			code:      1,
			stderrHas: []string{"error: execution exec-1 failed: exit status 2 (EXIT_NONZERO)\n"},
			check:     wantPolls(2),
		},
		{
			name: "wait timeout",
			args: []string{"exec", "wait", "exec-1", "--poll", "1ms"},
			setup: func(f *fakeServer) {
				f.status = statusSequence(execResult(stTimeout, "", "EXECUTION_TIMEOUT", ""))
			},
			code:  124,
			check: wantPolls(1),
		},
		{
			name: "wait json",
			args: []string{"exec", "wait", "exec-1", "--poll", "1ms", "--json"},
			setup: func(f *fakeServer) {
				f.status = statusSequence(execResult(stPending, "", "", ""), execResult(stCompleted, "out", "", ""))
			},
			check: jsonHas(map[string]any{"found": true, "result.status": "EXECUTION_STATUS_COMPLETED"}),
		},
		{
			name: "wait rpc error",
			args: []string{"exec", "wait", "exec-1", "--poll", "1ms"},
			setup: func(f *fakeServer) {
				f.status = func(context.Context, *spearlet.GetExecutionStatusRequest) (*spearlet.GetExecutionStatusResponse, error) {
					return nil, status.Error(codes.Unavailable, "node down")
				}
			},
			code:      5,
			stderrHas: []string{"error: cannot reach a Spear node at 127.0.0.1:", " (node down)\n"},
		},
	})
}

func TestExecWaitInterrupted(t *testing.T) {
	f := &fakeServer{status: statusSequence(execResult(stRunning, "", "", ""))}
	addr := startFake(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	r := runCLI(ctx, addr, "", "exec", "wait", "exec-1", "--poll", "5ms")
	if r.code != ExitCancelled {
		t.Errorf("exit code = %d, want %d; stderr: %s", r.code, ExitCancelled, r.stderr)
	}
	if len(f.recorded()) < 2 {
		t.Errorf("want several polls, got %d", len(f.recorded()))
	}
}

func TestNode(t *testing.T) {
	runCases(t, []cliCase{
		{
			name: "health",
			args: []string{"health"},
			setup: func(f *fakeServer) {
				f.health = func(context.Context, *spearlet.GetHealthRequest) (*spearlet.GetHealthResponse, error) {
					return &spearlet.GetHealthResponse{Status: "healthy", UptimeSeconds: 90,
						Details: &spearlet.HealthDetails{ActiveTasks: 3, RunningExecutions: 1, SystemInfo: map[string]string{"go": "1.26"}}}, nil
				}
			},
			stdoutHas: []string{"healthy", "1m30s", "tasks running:", "go:"},
			calls:     []rpcCall{{"GetHealth", &spearlet.GetHealthRequest{IncludeDetails: true}}},
		},
		{
			name: "health unhealthy",
			args: []string{"health"},
			setup: func(f *fakeServer) {
				f.health = func(context.Context, *spearlet.GetHealthRequest) (*spearlet.GetHealthResponse, error) {
					return &spearlet.GetHealthResponse{Status: "unhealthy", Message: "store down"}, nil
				}
			},
			code:      1,
			stdoutHas: []string{"unhealthy", "store down"},
		},
		{
			name: "stats",
			args: []string{"stats", "--hours", "24"},
			setup: func(f *fakeServer) {
				f.stats = func(context.Context, *spearlet.GetStatsRequest) (*spearlet.GetStatsResponse, error) {
					return &spearlet.GetStatsResponse{
						ServiceStats: &spearlet.ServiceStats{UptimeSeconds: 60, TotalTasks: 2, TotalExecutions: 10},
						TaskStats: &spearlet.TaskStats{ActiveTasks: 1, TasksByType: map[string]int32{"wasm": 1, "process": 1},
							MostActiveTasks: []*spearlet.TaskInfo{{TaskId: "hot", ExecutionCount: 9}}},
						ExecutionStats: &spearlet.ExecutionStats{CompletedExecutions: 9, FailedExecutions: 1, SuccessRatePercent: 90},
					}, nil
				}
			},
			stdoutHas: []string{"Service", "Tasks", "  running:", "Executions", "process=1, wasm=1", "hot", "90.0%"},
			calls:     []rpcCall{{"GetStats", &spearlet.GetStatsRequest{IncludeTaskStats: true, IncludeExecutionStats: true, TimeRangeHours: 24}}},
		},
		{
			name:      "unimplemented method is an rpc error",
			args:      []string{"stats"},
			code:      1,
			stderrHas: []string{"error: fake: GetStats not set up (UNIMPLEMENTED)\n"},
		},
	})
}

func TestAddrFlagAndUnreachableNode(t *testing.T) {
	f := &fakeServer{health: func(context.Context, *spearlet.GetHealthRequest) (*spearlet.GetHealthResponse, error) {
		return &spearlet.GetHealthResponse{Status: "healthy"}, nil
	}}
	addr := startFake(t, f)

	// A closed port: nothing listens there.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	_ = lis.Close()

	ctx := context.Background()
	if r := runCLI(ctx, dead, "", "--addr", addr, "health"); r.code != 0 {
		t.Errorf("--addr should override SPEAR_ADDR: code %d, stderr %s", r.code, r.stderr)
	}
	r := runCLI(ctx, dead, "", "--timeout", "2s", "health")
	want := "error: cannot reach a Spear node at " + dead + " (connection refused); start one with 'spear serve' or 'make run', or set --addr / SPEAR_ADDR\n"
	if r.code != ExitUnavailable || r.stderr != want {
		t.Errorf("unreachable node: code %d, stderr %q; want %d, %q", r.code, r.stderr, ExitUnavailable, want)
	}
}

func TestMainUsesEnvAddr(t *testing.T) {
	f := &fakeServer{health: func(context.Context, *spearlet.GetHealthRequest) (*spearlet.GetHealthResponse, error) {
		return &spearlet.GetHealthResponse{Status: "degraded"}, nil
	}}
	t.Setenv("SPEAR_ADDR", startFake(t, f))
	var out, errb bytes.Buffer
	if code := Main(context.Background(), []string{"health", "--json"}, &out, &errb); code != 0 {
		t.Fatalf("code %d: %s", code, errb.String())
	}
	var got map[string]any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || got["status"] != "degraded" {
		t.Errorf("stdout %q: %v", out.String(), err)
	}
}

func TestHelpDocumentsExitCodes(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"invoke", "--help"}, {"exec", "wait", "--help"}} {
		r := runCLI(context.Background(), "127.0.0.1:1", "", args...)
		if r.code != 0 {
			t.Errorf("%v: code %d", args, r.code)
		}
		for _, want := range []string{"124", "130"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("%v help lacks exit code %s:\n%s", args, want, r.stdout)
			}
		}
	}
}

func TestHelpers(t *testing.T) {
	if got := statusName(stCompleted); got != "completed" {
		t.Errorf("statusName = %q", got)
	}
	for _, name := range []string{"pending", "running", "completed", "failed", "cancelled", "timeout"} {
		s, ok := parseStatus(name)
		if !ok || statusName(s) != name {
			t.Errorf("parseStatus(%q) = %v, %v", name, s, ok)
		}
	}
	if _, ok := parseStatus("unknown"); ok {
		t.Error("parseStatus(unknown) should fail")
	}
	for st, want := range map[spearlet.ExecutionStatus]int{stCompleted: 0, stFailed: 1, stTimeout: 124, stCancelled: 130} {
		if code, terminal := outcome(st); code != want || !terminal {
			t.Errorf("outcome(%v) = %d, %v", st, code, terminal)
		}
	}
	if _, terminal := outcome(stRunning); terminal {
		t.Error("running is not terminal")
	}
	err := newRPCError(status.Error(codes.NotFound, "gone"), metadata.Pairs("spear-error-code", "TASK_NOT_FOUND"))
	var re *rpcError
	if !errors.As(err, &re) || err.Error() != "gone (TASK_NOT_FOUND)" {
		t.Errorf("rpc error = %v", err)
	}
	if got := fmt.Sprint(fmtBytes(1536)); got != "1.5 KiB" {
		t.Errorf("fmtBytes = %q", got)
	}
}

func TestParseByteSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  string
	}{
		{in: "0", want: 0},
		{in: "1048576", want: 1 << 20},
		{in: "512B", want: 512},
		{in: "500M", want: 500_000_000},
		{in: "500MB", want: 500_000_000},
		{in: "64Mi", want: 64 << 20},
		{in: "64MiB", want: 64 << 20},
		{in: "64mi", want: 64 << 20},
		{in: "1Gi", want: 1 << 30},
		{in: "1.5Gi", want: 3 << 29},
		{in: "2K", want: 2000},
		{in: "2Ki", want: 2048},
		{in: "1Ti", want: 1 << 40},
		{in: " 8 Mi ", want: 8 << 20},
		{in: "", err: "want a number"},
		{in: "Mi", err: "want a number"},
		{in: "1.2.3M", err: "want a number"},
		{in: "-1", err: "want a number"},
		{in: "64Mb/s", err: "unknown unit"},
		{in: "10X", err: "unknown unit"},
		{in: "1.5", err: "whole number"},
		{in: "0.1Ki", err: "whole number"},
		{in: "9000000Ti", err: "too large"},
	} {
		got, err := parseByteSize(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("parseByteSize(%q) = %d, %v; want error containing %q", tc.in, got, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("parseByteSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

// TestExecWaitWatches: exec wait follows WatchExecution's events, printing
// each transition, and exits with the outcome.
func TestExecWaitWatches(t *testing.T) {
	tests := []struct {
		name     string
		final    spearlet.ExecutionStatus
		wantCode int
	}{
		{"completed", spearlet.ExecutionStatus_EXECUTION_STATUS_COMPLETED, 0},
		{"failed", spearlet.ExecutionStatus_EXECUTION_STATUS_FAILED, 1},
		{"timeout", spearlet.ExecutionStatus_EXECUTION_STATUS_TIMEOUT, 124},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeServer{watch: func(r *spearlet.WatchExecutionRequest, s grpc.ServerStreamingServer[spearlet.ExecutionEvent]) error {
				for _, st := range []spearlet.ExecutionStatus{spearlet.ExecutionStatus_EXECUTION_STATUS_PENDING, spearlet.ExecutionStatus_EXECUTION_STATUS_RUNNING} {
					if err := s.Send(&spearlet.ExecutionEvent{ExecutionId: r.ExecutionId, Status: st}); err != nil {
						return err
					}
				}
				return s.Send(&spearlet.ExecutionEvent{ExecutionId: r.ExecutionId, Status: tc.final, Result: execResult(tc.final, "out", "", "")})
			}}
			res := runCLI(context.Background(), startFake(t, f), "", "exec", "wait", "ex-9")
			if res.code != tc.wantCode {
				t.Fatalf("exit %d, want %d (stderr %q)", res.code, tc.wantCode, res.stderr)
			}
			for _, want := range []string{"pending", "running", strings.ToLower(strings.TrimPrefix(tc.final.String(), "EXECUTION_STATUS_"))} {
				if !strings.Contains(res.stderr, want) {
					t.Errorf("stderr %q lacks %q", res.stderr, want)
				}
			}
			calls := f.recorded()
			if len(calls) != 1 || calls[0].method != "WatchExecution" || !proto.Equal(calls[0].req, &spearlet.WatchExecutionRequest{ExecutionId: "ex-9", IncludeResult: true}) {
				t.Fatalf("calls %v: want one WatchExecution and no polling", calls)
			}
		})
	}
}

// TestExecLogs: logs prints the timestamped lines once; --follow keeps
// printing new ones until the execution ends.
func TestExecLogs(t *testing.T) {
	var n int
	f := &fakeServer{status: func(_ context.Context, r *spearlet.GetExecutionStatusRequest) (*spearlet.GetExecutionStatusResponse, error) {
		n++
		st := spearlet.ExecutionStatus_EXECUTION_STATUS_RUNNING
		logs := []string{"t1 one"}
		if n >= 2 {
			logs = append(logs, "t2 two")
		}
		if n >= 3 {
			st = spearlet.ExecutionStatus_EXECUTION_STATUS_COMPLETED
		}
		return &spearlet.GetExecutionStatusResponse{Found: true, Logs: logs, Result: &spearlet.ExecutionResult{Status: st}}, nil
	}}
	addr := startFake(t, f)
	res := runCLI(context.Background(), addr, "", "exec", "logs", "ex-1")
	if res.code != 0 || res.stdout != "t1 one\n" {
		t.Fatalf("logs: exit %d, stdout %q", res.code, res.stdout)
	}
	n = 0
	res = runCLI(context.Background(), addr, "", "exec", "logs", "ex-1", "--follow")
	if res.code != 0 || res.stdout != "t1 one\nt2 two\n" {
		t.Fatalf("logs --follow: exit %d, stdout %q", res.code, res.stdout)
	}
	calls := f.recorded()
	if !proto.Equal(calls[0].req, &spearlet.GetExecutionStatusRequest{ExecutionId: "ex-1", IncludeLogs: true}) {
		t.Fatalf("request %v", calls[0].req)
	}
}
