package server

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/api/spearlet/spearletconnect"
	"github.com/spear-go/spear/internal/auth"
	"github.com/spear-go/spear/internal/confine"
	"github.com/spear-go/spear/internal/executor"
	"github.com/spear-go/spear/internal/metrics"
	"github.com/spear-go/spear/internal/registry"
	spearrt "github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/runtime/process"
	"github.com/spear-go/spear/internal/runtime/wasm"
	"github.com/spear-go/spear/internal/store"
	"github.com/spear-go/spear/internal/task"
)

// env is a node assembled the way internal/node does it, serving on a
// loopback port, with clients for every transport.
type env struct {
	addr    string
	base    string // http://addr
	dataDir string
	svc     *Service
	srv     *Server
	mgr     *executor.Manager
	reg     *registry.Registry
	st      *store.Store
	grpc    pb.FunctionServiceClient
	connect spearletconnect.FunctionServiceClient
	json    spearletconnect.FunctionServiceClient // Connect protocol, JSON codec
}

type envOptions struct {
	maxInput int
	workers  int
	auth     *auth.Keys // tokens checked; nil: auth off
}

// samplesDir is the repository's sample functions.
func samplesDir(t testing.TB) string {
	t.Helper()
	d, err := filepath.Abs(filepath.Join("..", "..", "samples"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(ctx, store.Options{DataDir: dir})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	w, err := wasm.New(ctx, wasm.Options{CacheDir: filepath.Join(dir, "wasm-cache")})
	if err != nil {
		st.Close()
		t.Fatalf("wasm.New: %v", err)
	}
	rts := map[spearrt.Type]spearrt.Runtime{
		spearrt.TypeProcess: process.New(process.Options{}),
		spearrt.TypeWasm:    w,
	}
	bg, cancelBG := context.WithCancel(context.Background())
	// Local artifacts: the samples, and tests' scratch files.
	roots, err := confine.New([]string{samplesDir(t), os.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(st, rts, roots, time.Now, nil)
	if err := reg.Watch(bg); err != nil {
		t.Fatalf("Watch: %v", err)
	}
	var mgr *executor.Manager
	m := metrics.New(metrics.Gauges{
		Running: func() float64 { r, _ := mgr.Counts(); return float64(r) },
		Waiting: func() float64 { _, w := mgr.Counts(); return float64(w) },
		QueuedByBand: func() []int64 {
			q, _ := mgr.QueueDepthByBand(context.Background())
			return q
		},
	})
	mgr = executor.New(executor.Options{NodeID: "test-node", Workers: o.workers, Hooks: m}, st, reg, rts)
	if err := mgr.Start(ctx); err != nil {
		t.Fatalf("executor Start: %v", err)
	}
	svc := NewService(ServiceOptions{NodeID: "test-node", MaxInputBytes: o.maxInput, SystemInfo: map[string]string{"store": "embedded"}}, mgr, reg, st)
	srv := New(svc, Options{Metrics: m.Handler(), Auth: o.auth})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()

	samples := samplesDir(t)
	for _, s := range []struct {
		id  string
		typ spearrt.Type
		loc string
	}{
		{"echo", spearrt.TypeProcess, "process/echo.sh"},
		{"upper", spearrt.TypeProcess, "process/upper.sh"},
		{"fail", spearrt.TypeProcess, "process/fail.sh"},
		{"ticker", spearrt.TypeProcess, "process/ticker.sh"},
		{"env", spearrt.TypeProcess, "process/env.sh"},
		{"wasm-echo", spearrt.TypeWasm, "wasm/echo.wasm"},
	} {
		if _, _, err := reg.Register(ctx, registry.Registration{ID: s.id, Artifact: task.Artifact{Type: s.typ, Location: filepath.Join(samples, s.loc)}}); err != nil {
			t.Fatalf("register %s: %v", s.id, err)
		}
	}

	cc, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{
		addr: l.Addr().String(), base: "http://" + l.Addr().String(), dataDir: dir,
		svc: svc, srv: srv, mgr: mgr, reg: reg, st: st,
		grpc:    pb.NewFunctionServiceClient(cc),
		connect: spearletconnect.NewFunctionServiceClient(http.DefaultClient, "http://"+l.Addr().String()),
		json:    spearletconnect.NewFunctionServiceClient(http.DefaultClient, "http://"+l.Addr().String(), connect.WithProtoJSON()),
	}
	t.Cleanup(func() {
		cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-ctx.Done():
			t.Errorf("Serve did not return after Shutdown")
		}
		mgr.Shutdown(ctx)
		cancelBG()
		_ = w.Close(ctx)
		st.Close()
	})
	return e
}

// testCtx bounds a test's calls generously (a hang guard, not a timing
// assertion).
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func bytesParam(b string) []*pb.FunctionParameter {
	return []*pb.FunctionParameter{{Name: "input", Value: pb.BytesAny([]byte(b))}}
}

// output returns the bytes of a result's Any(BytesValue).
func output(t *testing.T, a *anypb.Any) string {
	t.Helper()
	if a == nil {
		t.Fatal("no result")
	}
	var v wrapperspb.BytesValue
	if err := a.UnmarshalTo(&v); err != nil {
		t.Fatalf("result is not a BytesValue: %v", err)
	}
	return string(v.Value)
}

func invokeReq(taskID, in string, mode pb.ExecutionMode) *pb.InvokeFunctionRequest {
	return &pb.InvokeFunctionRequest{
		InvocationType: pb.InvocationType_INVOCATION_TYPE_EXISTING_TASK,
		TaskId:         taskID,
		ExecutionMode:  mode,
		Parameters:     bytesParam(in),
	}
}

// httpJSON performs a request and decodes a JSON body into a map.
func httpDo(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func jsonMap(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", b, err)
	}
	return m
}

// reasonOf is the error code of a Connect JSON error body: the reason of
// its google.rpc.ErrorInfo detail.
func reasonOf(m map[string]any) string {
	details, _ := m["details"].([]any)
	for _, d := range details {
		dm, _ := d.(map[string]any)
		if dm["type"] != "google.rpc.ErrorInfo" {
			continue
		}
		debug, _ := dm["debug"].(map[string]any)
		reason, _ := debug["reason"].(string)
		return reason
	}
	return ""
}
