package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/spear-go/spear/api/spearlet"
)

// getStatus GETs an execution status path (with query) and decodes it.
func getStatus(t *testing.T, e *env, pathAndQuery string) (int, *pb.GetExecutionStatusResponse) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), http.MethodGet, e.base+pathAndQuery, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, body := httpDo(t, req)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var st pb.GetExecutionStatusResponse
	if err := protojson.Unmarshal(body, &st); err != nil {
		t.Fatalf("status body %q: %v", body, err)
	}
	return resp.StatusCode, &st
}

// wantNotFound checks that a status route answers an unknown execution
// with a Connect error: 404, not_found, EXECUTION_NOT_FOUND.
func wantNotFound(t *testing.T, e *env, pathAndQuery string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), http.MethodGet, e.base+pathAndQuery, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, body := httpDo(t, req)
	m := jsonMap(t, body)
	if r.StatusCode != http.StatusNotFound || m["code"] != "not_found" || reasonOf(m) != "EXECUTION_NOT_FOUND" ||
		r.Header.Get(ErrorCodeTrailer) != "EXECUTION_NOT_FOUND" || !strings.Contains(fmt.Sprint(m["message"]), "not found") {
		t.Errorf("GET %s: %d %s", pathAndQuery, r.StatusCode, body)
	}
}

// waitStatus long-polls a status endpoint until the execution is terminal.
func waitStatus(t *testing.T, e *env, endpoint string) *pb.GetExecutionStatusResponse {
	t.Helper()
	code, st := getStatus(t, e, endpoint+"?wait=30s")
	if code != http.StatusOK || !st.Found {
		t.Fatalf("GET %s: %d %v", endpoint, code, st)
	}
	return st
}

func TestHTTPStatusRoute(t *testing.T) {
	e := newEnv(t, envOptions{})
	resp, err := e.grpc.InvokeFunction(testCtx(t), invokeReq("echo", "status me", pb.ExecutionMode_EXECUTION_MODE_SYNC))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("found", func(t *testing.T) {
		code, st := getStatus(t, e, fmt.Sprintf(StatusPath, resp.ExecutionId))
		if code != http.StatusOK || !st.Found || st.Result.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || output(t, st.Result.GetResult()) != "status me" {
			t.Errorf("%d %v", code, st)
		}
	})
	t.Run("unknown", func(t *testing.T) {
		wantNotFound(t, e, fmt.Sprintf(StatusPath, "000000000000ffffffffff"))
		// The same through gRPC is a response, not an error.
		g, err := e.grpc.GetExecutionStatus(testCtx(t), &pb.GetExecutionStatusRequest{ExecutionId: "000000000000ffffffffff"})
		if err != nil || g.Found {
			t.Errorf("grpc: %v %v", g, err)
		}
	})
	t.Run("invalid id", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(testCtx(t), http.MethodGet, e.base+"/api/v1/executions/bad%20id/status", nil)
		r, body := httpDo(t, req)
		m := jsonMap(t, body)
		if r.StatusCode != http.StatusBadRequest || reasonOf(m) != "INVALID_EXECUTION_ID" || m["code"] != "invalid_argument" ||
			r.Header.Get(ErrorCodeTrailer) != "INVALID_EXECUTION_ID" {
			t.Errorf("%d %s", r.StatusCode, body)
		}
	})
	t.Run("long poll", func(t *testing.T) {
		req := invokeReq("ticker", "", pb.ExecutionMode_EXECUTION_MODE_ASYNC)
		req.Parameters = nil
		req.Context = &pb.ExecutionContext{Environment: map[string]string{"TICKS": "3"}}
		a, err := e.grpc.InvokeFunction(testCtx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		code, st := getStatus(t, e, a.StatusEndpoint+"?wait=30s&logs=true")
		if code != http.StatusOK || st.Result.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED ||
			output(t, st.Result.GetResult()) != "tick 1\ntick 2\ntick 3\n" {
			t.Errorf("%d %v", code, st)
		}
		// wait on an unknown execution answers 404 without waiting.
		wantNotFound(t, e, fmt.Sprintf(StatusPath, "000000000000eeeeeeeeee")+"?wait=30s")
	})
	t.Run("logs", func(t *testing.T) {
		f, err := e.grpc.InvokeFunction(testCtx(t), invokeReq("fail", "x", pb.ExecutionMode_EXECUTION_MODE_SYNC))
		if err != nil {
			t.Fatal(err)
		}
		_, st := getStatus(t, e, fmt.Sprintf(StatusPath, f.ExecutionId)+"?logs=true")
		if st.Result.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_FAILED || !strings.Contains(strings.Join(st.Logs, "\n"), "something went wrong") {
			t.Errorf("%v", st)
		}
	})
	t.Run("bad wait", func(t *testing.T) {
		for _, w := range []string{"soon", "-1s", "5"} {
			req, _ := http.NewRequestWithContext(testCtx(t), http.MethodGet,
				e.base+fmt.Sprintf(StatusPath, resp.ExecutionId)+"?wait="+url.QueryEscape(w), nil)
			r, body := httpDo(t, req)
			m := jsonMap(t, body)
			if r.StatusCode != http.StatusBadRequest || reasonOf(m) != "INVALID_WAIT" || m["code"] != "invalid_argument" {
				t.Errorf("wait=%s: %d %s", w, r.StatusCode, body)
			}
		}
	})
}

func TestHTTPCancelRoute(t *testing.T) {
	e := newEnv(t, envOptions{})
	req := invokeReq("ticker", "", pb.ExecutionMode_EXECUTION_MODE_ASYNC)
	req.Parameters = nil
	req.Context = &pb.ExecutionContext{Environment: map[string]string{"TICKS": "500"}}
	a, err := e.grpc.InvokeFunction(testCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	hr, _ := http.NewRequestWithContext(testCtx(t), http.MethodPost, e.base+"/api/v1/executions/"+a.ExecutionId+"/cancel?reason=test", nil)
	r, body := httpDo(t, hr)
	var out pb.CancelExecutionResponse
	if err := protojson.Unmarshal(body, &out); err != nil || r.StatusCode != http.StatusOK || !out.Success {
		t.Fatalf("cancel: %d %s %v", r.StatusCode, body, err)
	}
	st := waitStatus(t, e, a.StatusEndpoint)
	if st.Result.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_CANCELLED {
		t.Errorf("after cancel: %v", st)
	}
}

func TestHTTPUploadRoute(t *testing.T) {
	e := newEnv(t, envOptions{})
	script := []byte("#!/bin/sh\necho uploaded\n")
	sum := sha256.Sum256(script)
	digest := "sha256:" + hex.EncodeToString(sum[:])

	put := func(t *testing.T, method, query string, body []byte) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(testCtx(t), method, e.base+"/api/v1/artifacts?"+query, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		return httpDo(t, req)
	}
	var loc string
	for _, method := range []string{http.MethodPut, http.MethodPost} {
		r, body := put(t, method, "name=hello.sh&checksum="+url.QueryEscape(digest), script)
		var up pb.UploadArtifactResponse
		if err := protojson.Unmarshal(body, &up); err != nil || r.StatusCode != http.StatusCreated {
			t.Fatalf("%s upload: %d %s %v", method, r.StatusCode, body, err)
		}
		if up.Location != "artifact:"+digest || up.Checksum != digest || up.SizeBytes != int64(len(script)) {
			t.Errorf("%s upload: %v", method, &up)
		}
		loc = up.Location
	}

	for _, tc := range []struct {
		name, query string
		body        []byte
		status      int
		code        string
	}{
		{"checksum mismatch", "name=x&checksum=sha256:" + strings.Repeat("0", 64), script, 400, "CHECKSUM_MISMATCH"},
		{"malformed checksum", "name=x&checksum=md5:abc", script, 400, "INVALID_CHECKSUM"},
		{"empty", "name=x", nil, 400, "EMPTY_ARTIFACT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, body := put(t, http.MethodPut, tc.query, tc.body)
			m := jsonMap(t, body)
			if r.StatusCode != tc.status || reasonOf(m) != tc.code || r.Header.Get(ErrorCodeTrailer) != tc.code {
				t.Errorf("%d %s", r.StatusCode, body)
			}
		})
	}

	t.Run("uploaded artifact runs", func(t *testing.T) {
		reg, err := e.grpc.RegisterTask(testCtx(t), &pb.RegisterTaskRequest{
			TaskName: "uploaded", ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: loc, Checksum: digest},
		})
		if err != nil || !reg.Created {
			t.Fatalf("RegisterTask: %v %v", reg, err)
		}
		resp, err := e.grpc.InvokeFunction(testCtx(t), invokeReq("uploaded", "", pb.ExecutionMode_EXECUTION_MODE_SYNC))
		if err != nil {
			t.Fatal(err)
		}
		checkSyncOK(t, resp, "uploaded", "uploaded\n")
	})

	t.Run("over gRPC", func(t *testing.T) {
		up, err := e.grpc.UploadArtifact(testCtx(t), &pb.UploadArtifactRequest{Name: "again", Content: script, Checksum: digest})
		if err != nil || up.Location != "artifact:"+digest {
			t.Errorf("UploadArtifact: %v %v", up, err)
		}
		for sum, want := range map[string]string{
			"md5:00":                            "INVALID_CHECKSUM",
			"sha256:abc":                        "INVALID_CHECKSUM",
			"sha256:" + strings.Repeat("a", 64): "CHECKSUM_MISMATCH",
		} {
			var tr metadata.MD
			_, err = e.grpc.UploadArtifact(testCtx(t), &pb.UploadArtifactRequest{Name: "bad", Content: script, Checksum: sum}, grpc.Trailer(&tr))
			if code, ec := grpcErrorCode(t, err, tr); code != codes.InvalidArgument || ec != want {
				t.Errorf("checksum %s: %v %s, want %s", sum, code, ec, want)
			}
		}
	})
}

func TestHealthzAndMetrics(t *testing.T) {
	e := newEnv(t, envOptions{})
	req, _ := http.NewRequestWithContext(testCtx(t), http.MethodGet, e.base+"/healthz", nil)
	r, body := httpDo(t, req)
	var h pb.GetHealthResponse
	if err := protojson.Unmarshal(body, &h); err != nil || r.StatusCode != http.StatusOK || h.Status != "healthy" {
		t.Errorf("/healthz: %d %s %v", r.StatusCode, body, err)
	}

	for range 2 {
		if _, err := e.grpc.InvokeFunction(testCtx(t), invokeReq("echo", "m", pb.ExecutionMode_EXECUTION_MODE_SYNC)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.grpc.InvokeFunction(testCtx(t), invokeReq("fail", "m", pb.ExecutionMode_EXECUTION_MODE_SYNC)); err != nil {
		t.Fatal(err)
	}
	req, _ = http.NewRequestWithContext(testCtx(t), http.MethodGet, e.base+"/metrics", nil)
	r, body = httpDo(t, req)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d", r.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	counts := map[string]float64{}
	for _, m := range fams["spear_executions_total"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["runtime"] != "process" || labels["mode"] == "" {
			t.Errorf("labels %v", labels)
		}
		counts[labels["task"]+"/"+labels["status"]] += m.GetCounter().GetValue()
	}
	var okKey, failKey string
	for k := range counts {
		if strings.HasPrefix(k, "echo/") {
			okKey = k
		}
		if strings.HasPrefix(k, "fail/") {
			failKey = k
		}
	}
	if counts[okKey] != 2 || counts[failKey] != 1 || okKey == failKey {
		t.Errorf("spear_executions_total = %v", counts)
	}
	for _, name := range []string{"spear_running_executions", "spear_execution_duration_seconds", "spear_queued_executions"} {
		if fams[name] == nil {
			t.Errorf("no metric %s", name)
		}
	}
}

// slowConn writes its first n bytes one at a time.
type slowConn struct {
	net.Conn
	n int
}

func (c *slowConn) Write(p []byte) (int, error) {
	written := 0
	for c.n > 0 && len(p) > 0 {
		if _, err := c.Conn.Write(p[:1]); err != nil {
			return written, err
		}
		time.Sleep(time.Millisecond)
		written++
		c.n--
		p = p[1:]
	}
	n, err := c.Conn.Write(p)
	return written + n, err
}

func TestListenerSplit(t *testing.T) {
	e := newEnv(t, envOptions{})

	rawHTTP := func(t *testing.T, conn net.Conn, req string) string {
		t.Helper()
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := conn.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			t.Fatalf("reading response: %v", err)
		}
		return line
	}

	t.Run("HTTP/1.1 goes to net/http", func(t *testing.T) {
		for _, req := range []string{
			"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			// Starts like the preface ("P"), then differs.
			"POST /api/v1/executions/000000000000aaaaaaaaaa/cancel HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
		} {
			conn, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			line := rawHTTP(t, &slowConn{Conn: conn, n: 30}, req)
			conn.Close()
			if !strings.HasPrefix(line, "HTTP/1.1 ") {
				t.Errorf("%q answered %q", req[:10], line)
			}
		}
	})

	t.Run("slow h2c preface goes to gRPC", func(t *testing.T) {
		cc, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				if err != nil {
					return nil, err
				}
				return &slowConn{Conn: c, n: len(http2Preface) + 5}, nil
			}))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		h, err := pb.NewFunctionServiceClient(cc).GetHealth(testCtx(t), &pb.GetHealthRequest{})
		if err != nil || h.Status != "healthy" {
			t.Errorf("GetHealth over a slow preface: %v %v", h, err)
		}
	})

	t.Run("short connections do not leak", func(t *testing.T) {
		before := runtime.NumGoroutine()
		for i := range 40 {
			conn, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			if i%2 == 0 {
				_, _ = conn.Write(http2Preface[:1+i%len(http2Preface)])
			}
			conn.Close()
		}
		// Hang guard: the routing goroutines end once their peer closes.
		deadline := time.Now().Add(20 * time.Second)
		for runtime.NumGoroutine() > before+15 {
			if time.Now().After(deadline) {
				t.Fatalf("goroutines: %d before, %d after short connections", before, runtime.NumGoroutine())
			}
			time.Sleep(20 * time.Millisecond)
		}
		// Both sides still serve.
		if _, err := e.grpc.GetHealth(testCtx(t), &pb.GetHealthRequest{}); err != nil {
			t.Errorf("grpc after short connections: %v", err)
		}
		if _, err := e.connect.GetHealth(testCtx(t), &pb.GetHealthRequest{}); err != nil {
			t.Errorf("connect after short connections: %v", err)
		}
	})

	t.Run("preface then garbage", func(t *testing.T) {
		conn, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// A preface followed by garbage is handed to gRPC, which drops it;
		// the server survives.
		_, _ = conn.Write(append(append([]byte{}, http2Preface...), []byte("garbage that is no frame")...))
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 64)
		for {
			if _, err := conn.Read(buf); err != nil {
				break
			}
		}
		if _, err := e.grpc.GetHealth(testCtx(t), &pb.GetHealthRequest{}); err != nil {
			t.Errorf("grpc after a bad h2 connection: %v", err)
		}
	})
}

func TestServeAndShutdown(t *testing.T) {
	e := newEnv(t, envOptions{})
	// Shutdown before Serve must not leave Serve blocked.
	srv := New(e.svc, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after Shutdown: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Serve after Shutdown did not return")
	}
	if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
		c.Close()
		t.Errorf("listener still accepts after Serve returned")
	}

	// Shutdown racing with Serve: Serve returns and the listener is closed.
	for range 5 {
		srv := New(e.svc, Options{})
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(l) }()
		srv.Shutdown(ctx)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve racing Shutdown: %v", err)
			}
		case <-ctx.Done():
			t.Fatal("Serve racing Shutdown did not return")
		}
		if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
			c.Close()
			t.Errorf("listener still accepts after Serve returned")
		}
	}
}

// flakyListener fails its first Accepts with a temporary error.
type flakyListener struct {
	net.Listener
	mu    sync.Mutex
	fails int
}

type tempErr struct{}

func (tempErr) Error() string   { return "accept: too many open files" }
func (tempErr) Temporary() bool { return true }
func (tempErr) Timeout() bool   { return false }

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	fail := l.fails > 0
	if fail {
		l.fails--
	}
	l.mu.Unlock()
	if fail {
		return nil, tempErr{}
	}
	return l.Listener.Accept()
}

// permanentListener fails every Accept with a non-temporary error.
type permanentListener struct{ net.Listener }

func (permanentListener) Accept() (net.Conn, error) { return nil, errors.New("accept: broken") }

func TestServeAcceptErrors(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Temporary errors (EMFILE) do not stop the server.
	base, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(e.svc, Options{})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(&flakyListener{Listener: base, fails: 3}) }()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+base.Addr().String()+"/healthz", nil)
	if r, _ := httpDo(t, req); r.StatusCode != http.StatusOK {
		t.Errorf("/healthz after temporary accept errors: %d", r.StatusCode)
	}
	srv.Shutdown(ctx)
	if err := <-done; err != nil {
		t.Errorf("Serve after Shutdown: %v", err)
	}

	// A permanent error ends Serve and is reported.
	base2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer base2.Close()
	srv2 := New(e.svc, Options{})
	go func() { done <- srv2.Serve(permanentListener{base2}) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "broken") {
			t.Errorf("Serve with a broken listener returned %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Serve with a broken listener did not return")
	}
	srv2.Shutdown(ctx)
}

// TestHTTPErrorBodies: every HTTP error answer is a Connect JSON error
// with the error code in its body and header, its status kept: those of
// the mux (no route, wrong method) and of Connect's handler (no or another
// Content-Type, GET of a unary method) as the node's own.
func TestHTTPErrorBodies(t *testing.T) {
	e := newEnv(t, envOptions{})
	method := "/spearlet.FunctionService/GetHealth"
	cases := []struct {
		name, method, path, ctype, body string
		status                          int
		code, errorCode, header, msg    string
	}{
		{"no content type", http.MethodPost, method, "", "{}", 415, "invalid_argument", "INVALID_ARGUMENT", "Accept-Post", "application/json"},
		{"other content type", http.MethodPost, method, "text/plain", "{}", 415, "invalid_argument", "INVALID_ARGUMENT", "Accept-Post", `"text/plain"`},
		{"GET of a unary method", http.MethodGet, method, "", "", 405, "unimplemented", "UNIMPLEMENTED", "Allow", "allowed POST"},
		{"no route", http.MethodGet, "/no/such/route", "", "", 404, "not_found", "NOT_FOUND", "", "no such route: GET /no/such/route"},
		{"wrong method of a route", http.MethodDelete, "/api/v1/executions/x/status", "", "", 405, "unimplemented", "UNIMPLEMENTED", "Allow", "allowed GET"},
		{"route error", http.MethodGet, "/api/v1/executions/bad%20id/status", "", "", 400, "invalid_argument", "INVALID_EXECUTION_ID", "", "bad id"},
		{"method error", http.MethodPost, "/spearlet.FunctionService/GetTask", "application/json", `{"taskId":"a.b"}`, 400, "invalid_argument", "INVALID_TASK_ID", "", "a.b"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(testCtx(t), tc.method, e.base+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			r, body := httpDo(t, req)
			m := jsonMap(t, body)
			if r.StatusCode != tc.status || m["code"] != tc.code || reasonOf(m) != tc.errorCode ||
				r.Header.Get(ErrorCodeTrailer) != tc.errorCode || !strings.Contains(fmt.Sprint(m["message"]), tc.msg) {
				t.Errorf("%s %s: HTTP %d %s (header %q); want %d %s %s with %q", tc.method, tc.path, r.StatusCode, body,
					r.Header.Get(ErrorCodeTrailer), tc.status, tc.code, tc.errorCode, tc.msg)
			}
			if ct := r.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if tc.header != "" && r.Header.Get(tc.header) == "" {
				t.Errorf("header %s dropped", tc.header)
			}
		})
	}
}
