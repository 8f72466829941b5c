package e2e

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/runtime/conformance"
)

// Generous bounds for a loaded 2-core machine. They are hang guards, not
// timing assertions.
const (
	readyTimeout = 60 * time.Second
	stopTimeout  = 60 * time.Second
	callTimeout  = 30 * time.Second
	finishBound  = 60 * time.Second
)

// nodeOpts configures a spear serve process.
type nodeOpts struct {
	workers   int  // --workers; 0: the node's default
	noSamples bool // start without --samples
	// roots are the --artifact-root dirs; nil: the defaults below.
	roots []string
	// sandbox is --sandbox; "" is off: most tests use the test's own
	// (private) temp dirs as side channels (markers, gates, helper
	// binaries), which the sandbox rightly denies a function. The sandbox
	// tests, and those of containment, set "auto" (the product default).
	sandbox string
	args    []string
	// dial: how the test's client connects (default: plaintext)
	dial []grpc.DialOption
	// listenHost: serve on this host (the port of addr), e.g. 0.0.0.0;
	// the test's client still dials 127.0.0.1
	listenHost string
	// addr: serve on this loopback address (default: a free port)
	addr string
}

// node is a running `spear serve` process and a gRPC client to it.
type node struct {
	t       *testing.T
	dataDir string
	addr    string
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has exited
	waitErr error         // set before exited is closed
	log     *conformance.Buffer
	conn    *grpc.ClientConn
	client  pb.FunctionServiceClient
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatalf("closing probe listener: %v", err)
	}
	return addr
}

// startNode starts `spear serve` on dataDir (a new temp dir when empty) and
// waits until its gRPC health service answers SERVING. The node is stopped
// with SIGTERM when the test ends, if it still runs.
func startNode(t *testing.T, dataDir string, o nodeOpts) *node {
	t.Helper()
	if dataDir == "" {
		dataDir = filepath.Join(t.TempDir(), "data")
	}
	// The port is picked by listening on :0 and closing, so another process
	// may take it before the node binds: retry a few times.
	var lastErr error
	for range 3 {
		n, err := tryStartNode(t, dataDir, o)
		if err == nil {
			return n
		}
		lastErr = err
	}
	t.Fatalf("starting spear serve: %v", lastErr)
	return nil
}

func tryStartNode(t *testing.T, dataDir string, o nodeOpts) (*node, error) {
	addr := o.addr
	if addr == "" {
		addr = freeAddr(t)
	}
	n := &node{t: t, dataDir: dataDir, addr: addr, exited: make(chan struct{}), log: &conformance.Buffer{}}
	listen := n.addr
	if o.listenHost != "" {
		_, port, _ := net.SplitHostPort(n.addr)
		listen = net.JoinHostPort(o.listenHost, port)
	}
	args := []string{"serve",
		"--data-dir", dataDir,
		"--listen", listen,
		"--docker", "off",
		"--ack-wait", "2s",
		"--shutdown-grace", "5s",
		"--log-level", "debug",
		"--sandbox", cmp.Or(o.sandbox, "off"),
	}
	if !o.noSamples {
		args = append(args, "--samples", filepath.Join(moduleRoot(), "samples"))
	}
	// Tests name scripts they write in their temporary directories, the
	// repository's samples and the wasm fixtures: those are the artifact
	// roots, unless the test names its own.
	roots := o.roots
	if roots == nil {
		roots = []string{os.TempDir(), filepath.Join(moduleRoot(), "samples"), filepath.Dir(wasmFixture("echo"))}
	}
	for _, r := range roots {
		args = append(args, "--artifact-root", r)
	}
	if o.workers > 0 {
		args = append(args, "--workers", strconv.Itoa(o.workers))
	}
	args = append(args, o.args...)
	n.cmd = exec.Command(spearBin(t), args...)
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	// Keep the test's environment from configuring the node.
	n.cmd.Env = withoutSpearEnv(os.Environ())
	if err := n.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		n.waitErr = n.cmd.Wait()
		close(n.exited)
	}()
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			t.Logf("log of node %s (data %s):\n%s", n.addr, n.dataDir, tail(n.log.String(), 60))
		}
	})

	dial := o.dial
	if dial == nil {
		dial = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(n.addr, dial...)
	if err != nil {
		n.kill()
		return nil, err
	}
	n.conn = conn
	t.Cleanup(func() { _ = conn.Close() })
	n.client = pb.NewFunctionServiceClient(conn)
	if err := n.waitReady(); err != nil {
		n.kill()
		return nil, fmt.Errorf("%w; node log:\n%s", err, tail(n.log.String(), 30))
	}
	return n, nil
}

func withoutSpearEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "SPEAR_") {
			out = append(out, kv)
		}
	}
	return out
}

// waitReady polls the gRPC health service until it reports SERVING.
func (n *node) waitReady() error {
	hc := healthpb.NewHealthClient(n.conn)
	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case <-n.exited:
			return fmt.Errorf("spear serve exited before it was ready: %v", n.waitErr)
		default:
		}
		ctx, cancel := context.WithTimeout(n.t.Context(), 2*time.Second)
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s not ready after %v: %v", n.addr, readyTimeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for the process to exit, killing it if it
// does not within stopTimeout. It reports the exit error of a clean stop.
func (n *node) stop() error {
	select {
	case <-n.exited:
		return n.waitErr
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
		return n.waitErr
	case <-time.After(stopTimeout):
		n.kill()
		return fmt.Errorf("node %s did not stop within %v of SIGTERM", n.addr, stopTimeout)
	}
}

// kill sends SIGKILL and waits for the process to be reaped.
func (n *node) kill() {
	select {
	case <-n.exited:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.exited
}

// httpURL is the base URL of the node's HTTP routes.
func (n *node) httpURL() string { return "http://" + n.addr }

// ctx returns a context bounded by d that ends with the test.
func ctx(t *testing.T, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return c
}

// output returns the bytes of an Any(BytesValue) output ("" for nil).
func output(t *testing.T, a *anypb.Any) string {
	t.Helper()
	if a == nil {
		return ""
	}
	var bv wrapperspb.BytesValue
	if err := a.UnmarshalTo(&bv); err != nil {
		t.Fatalf("output %v is not a BytesValue: %v", a.GetTypeUrl(), err)
	}
	return string(bv.GetValue())
}

// invocation builds an EXISTING_TASK request with input as its one
// parameter (none when input is nil).
func invocation(t *testing.T, taskID string, mode pb.ExecutionMode, input []byte) *pb.InvokeFunctionRequest {
	req := &pb.InvokeFunctionRequest{
		InvocationType: pb.InvocationType_INVOCATION_TYPE_EXISTING_TASK,
		TaskId:         taskID,
		ExecutionMode:  mode,
		Context:        &pb.ExecutionContext{},
	}
	if input != nil {
		req.Parameters = []*pb.FunctionParameter{{Name: "input", Value: pb.BytesAny(input)}}
	}
	return req
}

// invoke calls InvokeFunction and fails the test on an RPC error.
func (n *node) invoke(t *testing.T, req *pb.InvokeFunctionRequest) *pb.InvokeFunctionResponse {
	t.Helper()
	c, cancel := context.WithTimeout(t.Context(), callTimeout)
	defer cancel()
	resp, err := n.client.InvokeFunction(c, req)
	if err != nil {
		t.Fatalf("InvokeFunction(%s, %v): %v", req.GetTaskId(), req.GetExecutionMode(), err)
	}
	return resp
}

// status returns GetExecutionStatus of id with result and logs.
func (n *node) status(t *testing.T, id string) *pb.GetExecutionStatusResponse {
	t.Helper()
	c, cancel := context.WithTimeout(t.Context(), callTimeout)
	defer cancel()
	resp, err := n.client.GetExecutionStatus(c,
		&pb.GetExecutionStatusRequest{ExecutionId: id, IncludeResult: true, IncludeLogs: true})
	if err != nil {
		t.Fatalf("GetExecutionStatus(%s): %v", id, err)
	}
	return resp
}

// waitFinal polls GetExecutionStatus until id reaches a terminal status,
// failing the test after bound.
func (n *node) waitFinal(t *testing.T, id string, bound time.Duration) *pb.GetExecutionStatusResponse {
	t.Helper()
	return n.waitStatus(t, id, bound, func(s pb.ExecutionStatus) bool { return s.Terminal() })
}

// waitStatus polls GetExecutionStatus until ok(status) holds. UNAVAILABLE
// (a cluster electing its streams' leaders after losing a server) is
// asked again, as a client is told to, until bound.
func (n *node) waitStatus(t *testing.T, id string, bound time.Duration, ok func(pb.ExecutionStatus) bool) *pb.GetExecutionStatusResponse {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		c, cancel := context.WithTimeout(t.Context(), callTimeout)
		resp, err := n.client.GetExecutionStatus(c,
			&pb.GetExecutionStatusRequest{ExecutionId: id, IncludeResult: true, IncludeLogs: true})
		cancel()
		switch {
		case err != nil && (status.Code(err) != codes.Unavailable || time.Now().After(deadline)):
			t.Fatalf("GetExecutionStatus(%s): %v", id, err)
		case err == nil && resp.GetFound() && ok(resp.GetResult().GetStatus()):
			return resp
		case time.Now().After(deadline):
			t.Fatalf("execution %s: still %v (found=%v, %q) after %v",
				id, resp.GetResult().GetStatus(), resp.GetFound(), resp.GetMessage(), bound)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rpcError describes a failed RPC: its code, the ErrorInfo reason and the
// spear-error-code trailer.
type rpcError struct {
	code    codes.Code
	reason  string
	trailer string
	msg     string
}

// asRPCError converts err (with the call's trailer) to an rpcError; it fails
// the test when err is nil.
func asRPCError(t *testing.T, err error, trailer metadata.MD) rpcError {
	t.Helper()
	if err == nil {
		t.Fatal("the call succeeded; want an RPC error")
	}
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v is not a gRPC status", err)
	}
	e := rpcError{code: st.Code(), msg: st.Message()}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			e.reason = info.GetReason()
		}
	}
	if v := trailer.Get(errdefs.Trailer); len(v) > 0 {
		e.trailer = v[0]
	}
	return e
}

// writeScript writes an executable shell script into dir and returns its
// absolute path and sha256 checksum ("sha256:<hex>").
func writeScript(t *testing.T, dir, name, body string) (path, checksum string) {
	t.Helper()
	path = filepath.Join(dir, name)
	content := "#!/bin/sh\n" + body
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(content))
	return path, "sha256:" + hex.EncodeToString(sum[:])
}

// registerProcess registers a process task for the script at path.
func (n *node) registerProcess(t *testing.T, id, path string) *pb.TaskInfo {
	t.Helper()
	resp, err := n.client.RegisterTask(ctx(t, callTimeout), &pb.RegisterTaskRequest{
		TaskId:       id,
		ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: path},
	})
	if err != nil {
		t.Fatalf("RegisterTask(%s, %s): %v", id, path, err)
	}
	return resp.GetTask()
}

// sleeperBody is a script that marks a file named by $MARK (if set) when it
// starts, sleeps $SLEEP seconds (default 30) and prints "slept".
const sleeperBody = `[ -n "$MARK" ] && : > "$MARK"
sleep "${SLEEP:-30}"
echo slept
`

// processesRunning lists the pids of processes whose command line mentions
// needle.
func processesRunning(needle string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.Contains(b, []byte(needle)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitNoProcesses waits until no process mentions needle in its command line.
func waitNoProcesses(t *testing.T, needle string, bound time.Duration) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		pids := processesRunning(needle)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes %v running %s still alive after %v", pids, needle, bound)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string, lines int) string {
	parts := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// running reports whether the node process is still running.
func (n *node) running() bool {
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}
