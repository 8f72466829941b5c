package server

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/auth"
	"github.com/spear-go/spear/internal/console"
	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/executor"
)

// serveConsole serves e's service with the console on a second listener
// (keys: tokens checked) and returns its base URL.
func serveConsole(t *testing.T, e *env, keys *auth.Keys) string {
	t.Helper()
	srv := New(e.svc, Options{Console: console.Handler(), Auth: keys})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return "http://" + l.Addr().String()
}

func get(t *testing.T, url, token string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return httpDo(t, req)
}

func TestConsoleRoutes(t *testing.T) {
	keys, toks := testKeys(t)
	e := newEnv(t, envOptions{})
	open, locked := serveConsole(t, e, nil), serveConsole(t, e, keys)
	tests := []struct {
		name, base, path, token string
		status                  int
		contentType             string
		code                    errdefs.Code
	}{
		{"overview page", open, "/ui/", "", 200, "text/html", errdefs.Code{}},
		{"without the slash", open, "/ui", "", 200, "text/html", errdefs.Code{}},
		{"task page", open, "/ui/tasks/echo", "", 200, "text/html", errdefs.Code{}},
		{"execution page", open, "/ui/executions/x1/", "", 200, "text/html", errdefs.Code{}},
		{"script", open, "/ui/assets/pages/execution.js", "", 200, "text/javascript", errdefs.Code{}},
		{"no listing", open, "/ui/assets/", "", 404, "application/json", errdefs.NotFound},
		{"no such page", open, "/ui/tasks/a/b", "", 404, "application/json", errdefs.NotFound},
		{"no such file", open, "/ui/assets/nope.js", "", 404, "application/json", errdefs.NotFound},
		{"bad status", open, "/ui/api/executions?status=DONE", "", 400, "application/json", errdefs.InvalidStatusFilter},
		{"bad mode", open, "/ui/api/executions?mode=fast", "", 400, "application/json", errdefs.UnknownExecutionMode},
		{"bad age", open, "/ui/api/executions?since=-1h", "", 400, "application/json", errdefs.InvalidTimeRange},
		{"bad limit", open, "/ui/api/executions?limit=0", "", 400, "application/json", errdefs.InvalidLimit},
		{"bad scan", open, "/ui/api/executions?scan=x", "", 400, "application/json", errdefs.InvalidLimit},
		{"bad task", open, "/ui/api/executions?task=a.b", "", 400, "application/json", errdefs.InvalidTaskID},
		{"unknown execution", open, "/ui/api/executions/nope", "", 404, "application/json", errdefs.ExecutionNotFound},
		{"pages need no token", locked, "/ui/executions", "", 200, "text/html", errdefs.Code{}},
		{"data needs one", locked, "/ui/api/overview", "", 401, "application/json", errdefs.AuthRequired},
		{"read may read", locked, "/ui/api/overview", toks[auth.Read], 200, "application/json", errdefs.Code{}},
		{"executions need read", locked, "/ui/api/executions", "", 401, "application/json", errdefs.AuthRequired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := get(t, tt.base+tt.path, tt.token)
			if resp.StatusCode != tt.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), tt.contentType) {
				t.Fatalf("%d %s (%.200s), want %d %s", resp.StatusCode, resp.Header.Get("Content-Type"), body, tt.status, tt.contentType)
			}
			if tt.code != (errdefs.Code{}) && reasonOf(jsonMap(t, body)) != tt.code.String() {
				t.Errorf("body %s, want error code %v", body, tt.code)
			}
			if tt.contentType == "text/html" && !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
				t.Errorf("page without its content security policy: %v", resp.Header)
			}
		})
	}
}

// consoleRows decodes GET /ui/api/executions.
func consoleRows(t *testing.T, base, query string) []map[string]any {
	t.Helper()
	resp, body := get(t, base+"/ui/api/executions?"+query, "")
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d %s", query, resp.StatusCode, body)
	}
	var out struct {
		Executions []struct {
			Execution map[string]any `json:"execution"`
			Node      string         `json:"node"`
		} `json:"executions"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	rows := make([]map[string]any, len(out.Executions))
	for i, r := range out.Executions {
		rows[i] = r.Execution
		rows[i]["node"] = r.Node
	}
	return rows
}

func TestConsoleExecutionsAndOverview(t *testing.T) {
	e := newEnv(t, envOptions{})
	base := serveConsole(t, e, nil)
	var ids []string
	for _, task := range []string{"echo", "fail", "upper"} {
		r, err := e.svc.InvokeFunction(testCtx(t), invokeReq(task, "x", pb.ExecutionMode_EXECUTION_MODE_SYNC))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ExecutionId)
	}
	// Sync runs are recorded in the store a moment after they answer.
	for deadline := time.Now().Add(30 * time.Second); len(consoleRows(t, base, "")) < len(ids); {
		if time.Now().After(deadline) {
			t.Fatalf("the store does not list the %d executions", len(ids))
		}
		time.Sleep(20 * time.Millisecond)
	}
	tests := []struct {
		query string
		want  []string // ids, newest first
	}{
		{"", []string{ids[2], ids[1], ids[0]}},
		{"limit=2", []string{ids[2], ids[1]}},
		{"status=failed", []string{ids[1]}},
		{"status=EXECUTION_STATUS_COMPLETED&task=echo", []string{ids[0]}},
		{"mode=sync&since=1h", []string{ids[2], ids[1], ids[0]}},
		{"mode=ASYNC", nil},
		{"scan=2&status=completed", []string{ids[2]}},
		{"dead=true", nil},
	}
	for _, tt := range tests {
		rows := consoleRows(t, base, tt.query)
		var got []string
		for _, r := range rows {
			got = append(got, r["executionId"].(string))
			if r["node"] != "test-node" {
				t.Errorf("%s: row %v without its node", tt.query, r)
			}
		}
		if strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("%q: %v, want %v", tt.query, got, tt.want)
		}
	}
	resp, body := get(t, base+"/ui/api/overview", "")
	var o overview
	if err := json.Unmarshal(body, &o); resp.StatusCode != 200 || err != nil {
		t.Fatalf("overview: %d %s %v", resp.StatusCode, body, err)
	}
	count, failed := 0, 0
	for _, b := range o.Buckets {
		count, failed = count+b.Count, failed+b.Failed
	}
	if len(o.Buckets) != overviewBuckets || count != 3 || failed != 1 || len(o.QueueBands) != 5 {
		t.Errorf("overview %s: want %d buckets, 3 finished, 1 failed, 5 bands", body, overviewBuckets)
	}
}

func TestBucketsOf(t *testing.T) {
	since := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration, ms int64, s execution.Status) executor.Finished {
		return executor.Finished{At: since.Add(d), DurationMs: ms, Status: s}
	}
	ok, bad := execution.StatusCompleted, execution.StatusFailed
	var many []executor.Finished
	for i := range 100 {
		many = append(many, at(time.Minute, int64(i+1), ok))
	}
	tests := []struct {
		name          string
		in            []executor.Finished
		bucket        int
		count, failed int
		p50, p99      int64
	}{
		{"none", nil, 0, 0, 0, 0, 0},
		{"one", []executor.Finished{at(0, 7, ok)}, 0, 1, 0, 7, 7},
		{"failed and timed out count as not completed", []executor.Finished{at(31*time.Second, 5, bad), at(40*time.Second, 9, execution.StatusTimeout), at(59*time.Second, 1, ok)}, 1, 3, 2, 5, 9},
		{"percentiles", many, 2, 100, 0, 50, 99},
		{"outside the window", []executor.Finished{at(-time.Second, 1, ok), at(overviewBuckets*overviewBucket, 1, ok)}, 0, 0, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := bucketsOf(tt.in, since)
			b := out[tt.bucket]
			if len(out) != overviewBuckets || b.Count != tt.count || b.Failed != tt.failed || b.P50Ms != tt.p50 || b.P99Ms != tt.p99 {
				t.Errorf("bucket %d: %+v, want count %d failed %d p50 %d p99 %d", tt.bucket, b, tt.count, tt.failed, tt.p50, tt.p99)
			}
			total := 0
			for _, x := range out {
				total += x.Count
			}
			if total != tt.count {
				t.Errorf("%d counted in all, want %d", total, tt.count)
			}
		})
	}
}
