package harness

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/errdefs"
)

// node is a running `spear serve` child and a gRPC client of it.
type node struct {
	c     *child
	addr  string
	dir   string
	extra []string
	conn  *grpc.ClientConn
	api   pb.FunctionServiceClient
}

var servingRe = regexp.MustCompile(`spearlet serving.*addr=(\S+)`)

// startNode starts a node on dir (created under the run's temp dir when it
// is empty) and waits until it answers.
func (e *env) startNode(ctx context.Context, dir string, extra ...string) (*node, error) {
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp(e.tmp, "node-"); err != nil {
			return nil, err
		}
	}
	docker := "off"
	if e.docker != "" {
		docker = "auto"
	}
	// The functions benched live in the bench's scratch dir and the
	// repository (samples, fixtures): those are the artifact roots.
	args := append([]string{"serve", "--data-dir", dir, "--listen", "127.0.0.1:0", "--docker", docker, "--log-level", "info",
		"--artifact-root", e.tmp, "--artifact-root", e.opts.Root}, extra...)
	c, addr, err := e.procs.start(ctx, "spear serve", servingRe, e.spear, args...)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		e.procs.kill(c)
		return nil, fmt.Errorf("dial node: %w: %w", errdefs.ErrUnavailable, err)
	}
	n := &node{c: c, addr: addr, dir: dir, extra: extra, conn: conn, api: pb.NewFunctionServiceClient(conn)}
	deadline := time.Now().Add(30 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := n.api.GetHealth(cctx, &pb.GetHealthRequest{})
		cancel()
		if err == nil {
			return n, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			e.stopNode(n)
			return nil, fmt.Errorf("node not healthy: %w: %w", errdefs.ErrUnavailable, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopNode stops a node gracefully (SIGTERM, then SIGKILL after 15 s).
func (e *env) stopNode(n *node) {
	if n == nil {
		return
	}
	_ = n.conn.Close()
	e.procs.stop(n.c, 15*time.Second)
}

// killNode kills a node at once.
func (e *env) killNode(n *node) {
	_ = n.conn.Close()
	e.procs.kill(n.c)
}

// restartNode stops n and starts a node on the same data dir.
func (e *env) restartNode(ctx context.Context, n *node) (*node, error) {
	e.stopNode(n)
	return e.startNode(ctx, n.dir, n.extra...)
}

// startMainNode starts the node most rows share and registers the
// benchmark's tasks on it.
func (e *env) startMainNode(ctx context.Context) (*node, error) {
	n, err := e.startNode(ctx, "")
	if err != nil {
		return nil, err
	}
	tasks := map[string][2]string{
		"bench-wasm-echo":     {"wasm", e.bins["echo.wasm"]},
		"bench-process-echo":  {"process", e.bins["echo"]},
		"bench-process-ticks": {"process", e.bins["ticks"]},
		"bench-process-cat":   {"process", e.bins["cat"]},
		"bench-wasm-sleep":    {"wasm", e.bins["wsleep.wasm"]},
		"bench-wasm-spin":     {"wasm", e.bins["spin.wasm"]},
		"bench-process-sleep": {"process", e.bins["sleep"]},
	}
	if e.docker != "" {
		tasks["bench-docker-echo"] = [2]string{"docker", imageOf("echo")}
		tasks["bench-docker-sleep"] = [2]string{"docker", imageOf("sleep")}
	}
	for id, t := range tasks {
		if err := n.register(ctx, id, t[0], t[1]); err != nil {
			e.stopNode(n)
			return nil, err
		}
	}
	return n, nil
}

func (n *node) register(ctx context.Context, id, typ, location string) error {
	_, err := n.api.RegisterTask(ctx, &pb.RegisterTaskRequest{
		TaskId: id, TaskName: id,
		ArtifactSpec: &pb.ArtifactSpec{ArtifactType: typ, Location: location},
	})
	if err != nil {
		return fmt.Errorf("register %s: %w", id, err)
	}
	return nil
}

func params1(in []byte) []*pb.FunctionParameter {
	a, _ := anypb.New(wrapperspb.Bytes(in))
	return []*pb.FunctionParameter{{Name: "input", Value: a}}
}

// invokeSync runs task with input and fails unless it completed with the
// expected output length.
func (n *node) invokeSync(ctx context.Context, task string, in []byte) error {
	_, err := n.invokeSyncID(ctx, task, in)
	return err
}

// invokeSyncID is invokeSync that also returns the execution's id.
func (n *node) invokeSyncID(ctx context.Context, task string, in []byte) (string, error) {
	resp, err := n.api.InvokeFunction(ctx, &pb.InvokeFunctionRequest{
		InvocationType: pb.InvocationType_INVOCATION_TYPE_EXISTING_TASK,
		TaskId:         task, ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC,
		Parameters: params1(in),
	})
	if err != nil {
		return "", err
	}
	return resp.ExecutionId, checkSync(task, resp, in)
}

// checkSync fails unless a sync invocation completed and echoed in.
func checkSync(task string, resp *pb.InvokeFunctionResponse, in []byte) error {
	if !resp.Success {
		return fmt.Errorf("%s: %s: %w", task, resp.Message, errdefs.ErrInternal)
	}
	var out wrapperspb.BytesValue
	if resp.Result.GetResult() == nil || resp.Result.Result.UnmarshalTo(&out) != nil || len(out.Value) != len(in) {
		return fmt.Errorf("%s: unexpected output: %w", task, errdefs.ErrInternal)
	}
	return nil
}

// invokeSyncHTTP is invokeSync over the node's HTTP/1.1 port with a plain
// net/http client speaking the Connect protocol (a POST of the binary
// request): the same client and transport as the bare HTTP baselines, so
// the ratio shows Spear's own cost without gRPC's.
func (n *node) invokeSyncHTTP(hc *http.Client) func(ctx context.Context, task string, in []byte) error {
	url := "http://" + n.addr + pb.FunctionService_InvokeFunction_FullMethodName
	return func(ctx context.Context, task string, in []byte) error {
		body, err := proto.Marshal(&pb.InvokeFunctionRequest{
			InvocationType: pb.InvocationType_INVOCATION_TYPE_EXISTING_TASK,
			TaskId:         task, ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_SYNC,
			Parameters: params1(in),
		})
		if err != nil {
			return err
		}
		status, b, err := post(ctx, hc, url, "application/proto", body)
		if err != nil {
			return err
		}
		var out pb.InvokeFunctionResponse
		if status != http.StatusOK || proto.Unmarshal(b, &out) != nil {
			return fmt.Errorf("%s: HTTP %d: %q: %w", task, status, b, errdefs.ErrInternal)
		}
		return checkSync(task, &out, in)
	}
}

// invokeSyncJSON is invokeSyncHTTP with the Connect protocol's JSON
// encoding: what a curl user sends (lowerCamelCase fields, the input as a
// google.protobuf.StringValue).
func (n *node) invokeSyncJSON(hc *http.Client) func(ctx context.Context, task string, in []byte) error {
	url := "http://" + n.addr + pb.FunctionService_InvokeFunction_FullMethodName
	return func(ctx context.Context, task string, in []byte) error {
		body, err := json.Marshal(map[string]any{
			"taskId": task, "executionMode": "EXECUTION_MODE_SYNC",
			"parameters": []any{map[string]any{"name": "input", "value": map[string]any{
				"@type": "type.googleapis.com/google.protobuf.StringValue", "value": string(in)}}},
		})
		if err != nil {
			return err
		}
		status, b, err := post(ctx, hc, url, "application/json", body)
		if err != nil {
			return err
		}
		var out struct {
			Success bool `json:"success"`
			Result  struct {
				Result struct {
					Value string `json:"value"`
				} `json:"result"`
			} `json:"result"`
		}
		if status != http.StatusOK || json.Unmarshal(b, &out) != nil || !out.Success {
			return fmt.Errorf("%s: HTTP %d: %q: %w", task, status, b, errdefs.ErrInternal)
		}
		v := out.Result.Result.Value // a StringValue's text, or a BytesValue's base64
		if d, err := base64.StdEncoding.DecodeString(v); len(v) != len(in) && (err != nil || len(d) != len(in)) {
			return fmt.Errorf("%s: unexpected output %q: %w", task, v, errdefs.ErrInternal)
		}
		return nil
	}
}

// submit accepts an async execution of task and returns its id.
func (n *node) submit(ctx context.Context, task string, in []byte) (string, error) {
	resp, err := n.api.InvokeFunction(ctx, &pb.InvokeFunctionRequest{
		InvocationType: pb.InvocationType_INVOCATION_TYPE_EXISTING_TASK,
		TaskId:         task, ExecutionMode: pb.ExecutionMode_EXECUTION_MODE_ASYNC,
		Parameters: params1(in),
	})
	if err != nil {
		return "", err
	}
	if !resp.Success || resp.ExecutionId == "" {
		return "", fmt.Errorf("%s: not accepted: %s: %w", task, resp.Message, errdefs.ErrInternal)
	}
	return resp.ExecutionId, nil
}

// status returns an execution's result (without output).
func (n *node) status(ctx context.Context, id string) (*pb.ExecutionResult, error) {
	resp, err := n.api.GetExecutionStatus(ctx, &pb.GetExecutionStatusRequest{ExecutionId: id})
	if err != nil {
		return nil, err
	}
	if !resp.Found {
		return nil, fmt.Errorf("execution %s: %w", id, errdefs.ErrNotFound)
	}
	return resp.Result, nil
}

// waitStatus polls id every interval until pred holds or timeout passes.
func (n *node) waitStatus(ctx context.Context, id string, interval, timeout time.Duration, pred func(pb.ExecutionStatus) bool) (*pb.ExecutionResult, error) {
	deadline := time.Now().Add(timeout)
	for {
		r, err := n.status(ctx, id)
		if err == nil && pred(r.Status) {
			return r, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("execution %s still %s after %s: %w", id, r.Status, timeout, errdefs.ErrUnavailable)
			}
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		time.Sleep(interval)
	}
}

func tmpFile(dir, name string, data []byte) (string, error) {
	p := filepath.Join(dir, name)
	return p, os.WriteFile(p, data, 0o755)
}
