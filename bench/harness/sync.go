package harness

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"

	"github.com/spear-go/spear/internal/errdefs"
)

// target is a row's goal: latency ratio at most maxLat (p50), throughput
// ratio at least minThr; zero fields are not checked.
type target struct {
	maxLat, minThr float64
}

func (t target) String() string {
	switch {
	case t.maxLat != 0 && t.minThr != 0:
		return fmt.Sprintf("p50 ≤%.2gx, thr ≥%.2gx", t.maxLat, t.minThr)
	case t.maxLat != 0:
		return fmt.Sprintf("p50 ≤%.2gx", t.maxLat)
	case t.minThr != 0:
		return fmt.Sprintf("thr ≥%.2gx", t.minThr)
	}
	return ""
}

func (t target) judge(r *Row) {
	if t == (target{}) {
		r.Status = StatusInfo
		return
	}
	r.Target = t.String()
	r.Status = StatusPass
	if t.maxLat != 0 && (r.LatencyRatio == 0 || r.LatencyRatio > t.maxLat) {
		r.Status = StatusMiss
	}
	if t.minThr != 0 && (r.RateRatio == 0 || r.RateRatio < t.minThr) {
		r.Status = StatusMiss
	}
}

var addrRe = regexp.MustCompile(`^(127\.0\.0\.1:\d+)$`)

// startBaseline starts a baseline server and returns its address.
func (e *env) startBaseline(ctx context.Context, name string, args ...string) (*child, string, error) {
	return e.procs.start(ctx, name, addrRe, e.bins[name], args...)
}

func newHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns: 256, MaxIdleConnsPerHost: 256, DisableCompression: true,
	}}
}

// httpEcho posts in to url and checks the echoed length.
func httpEcho(hc *http.Client, url string, in []byte) call {
	return func(ctx context.Context, _ int) error {
		status, b, err := post(ctx, hc, url, "", in)
		if err != nil {
			return err
		}
		if status != http.StatusOK || len(b) != len(in) {
			return fmt.Errorf("baseline: HTTP %d: %q: %w", status, b, errdefs.ErrInternal)
		}
		return nil
	}
}

// post sends body to url and returns the answer's status code and body.
func post(ctx context.Context, hc *http.Client, url, contentType string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// dockerRun is the bare docker baseline: `docker run` of the image per
// request.
func dockerRun(image string, in []byte) call {
	return func(ctx context.Context, _ int) error {
		cmd := exec.CommandContext(ctx, "docker", "run", "--rm", "-i", "--network", "none", image)
		cmd.Stdin = bytes.NewReader(in)
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("docker run: %w", err)
		}
		if len(out) != len(in) {
			return fmt.Errorf("docker run: output %q: %w", out, errdefs.ErrInternal)
		}
		return nil
	}
}

// compare warms both sides up, runs them in interleaved rounds at conc
// and returns the row.
func (e *env) compare(ctx context.Context, id string, conc int, spear call, baseName string, base call, t target) Row {
	r := Row{ID: id, BaselineName: baseName}
	dur := e.p.roundDur
	drive(ctx, conc, e.p.warmup, 0, spear)
	drive(ctx, conc, e.p.warmup, 0, base)
	rs := interleave(ctx, e.p.rounds,
		side{"spear", func(ctx context.Context) round { return drive(ctx, conc, dur, 0, spear) }},
		side{baseName, func(ctx context.Context) round { return drive(ctx, conc, dur, 0, base) }},
	)
	var errs [2]int
	var firsts [2]error
	r.Spear, errs[0], firsts[0] = summarize(rs[0])
	r.Baseline, errs[1], firsts[1] = summarize(rs[1])
	if r.Spear == nil || r.Baseline == nil {
		r.Status = StatusError
		r.Note = fmt.Sprintf("no successful requests: spear %v; baseline %v", firsts[0], firsts[1])
		return r
	}
	r.ratios()
	t.judge(&r)
	if errs[0]+errs[1] > 0 {
		r.Note = fmt.Sprintf("errors: spear %d (%v), baseline %d (%v)", errs[0], firsts[0], errs[1], firsts[1])
	}
	return r
}

// syncRows compares sync invocations of an echo on runtime rt with its
// bare baseline at concurrency 1 and 32.
func (e *env) syncRows(ctx context.Context, rt string) ([]Row, error) {
	task := "bench-" + rt + "-echo"
	in := e.p.payload
	concs := []int{1, 32}
	var (
		base     call
		baseName string
		t        target
		byConc   map[int]target // t by concurrency, where it differs
		note     string
	)
	switch rt {
	case "wasm":
		c, addr, err := e.startBaseline(ctx, "wasmhttp", "-module", e.bins["echo.wasm"])
		if err != nil {
			return nil, err
		}
		defer e.procs.kill(c)
		base, baseName, t = httpEcho(newHTTPClient(), "http://"+addr+"/", in), "bare wazero http", target{1.3, 0.75}
	case "process":
		c, addr, err := e.startBaseline(ctx, "exechttp", "-binary", e.bins["echo"])
		if err != nil {
			return nil, err
		}
		defer e.procs.kill(c)
		base, baseName = httpEcho(newHTTPClient(), "http://"+addr+"/", in), "bare fork/exec http"
		byConc = map[int]target{1: {maxLat: 0.8}, 32: {minThr: 1.0}}
	case "docker":
		if e.docker == "" {
			return []Row{{ID: "sync-docker", Status: StatusSkip, Note: "skipped: no engine"}}, nil
		}
		base, baseName = dockerRun(imageOf("echo"), in), "bare docker run"
		if e.opts.Quick {
			concs = []int{1, 8}
			note = "quick mode: concurrency 8 instead of 32"
		}
	}
	spear := func(ctx context.Context, _ int) error { return e.main.invokeSync(ctx, task, in) }
	var rows []Row
	for _, conc := range concs {
		r := e.compare(ctx, fmt.Sprintf("sync-%s-c%d", rt, conc), conc, spear, baseName, base, targetAt(t, byConc, conc))
		if note != "" && conc != 1 {
			r.Note = joinNote(r.Note, note)
		}
		rows = append(rows, r)
	}
	if rt == "wasm" {
		r, err := e.proxyRow(ctx, task, spear)
		if err != nil {
			return rows, err
		}
		rows = append(rows, r)
	}
	// The same over the node's HTTP/1.1 port: like for like with the bare
	// HTTP server, so gRPC's own cost is out of the ratio; for wasm also
	// as JSON, what a curl user sends.
	type overHTTP struct {
		suffix, note string
		invoke       func(ctx context.Context, task string, in []byte) error
	}
	var https []overHTTP
	if rt != "docker" {
		https = append(https, overHTTP{"http", "Spear over HTTP/1.1 (Connect protocol, net/http client)", e.main.invokeSyncHTTP(newHTTPClient())})
	}
	if rt == "wasm" {
		https = append(https, overHTTP{"json", "Spear over HTTP/1.1, Connect protocol with JSON bodies (net/http client)", e.main.invokeSyncJSON(newHTTPClient())})
	}
	for _, h := range https {
		spearHTTP := func(ctx context.Context, _ int) error { return h.invoke(ctx, task, in) }
		for _, conc := range concs {
			r := e.compare(ctx, fmt.Sprintf("sync-%s-%s-c%d", rt, h.suffix, conc), conc, spearHTTP, baseName, base, targetAt(t, byConc, conc))
			r.Note = joinNote(r.Note, h.note)
			rows = append(rows, r)
		}
	}
	return rows, nil
}

// targetAt is the target at concurrency conc: byConc's, else t.
func targetAt(t target, byConc map[int]target, conc int) target {
	if c, ok := byConc[conc]; ok {
		return c
	}
	return t
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// proxyRow compares sync wasm echo at c32 with a warm Go HTTP upstream
// behind a reverse proxy (the of-watchdog http shape): a function kept
// running, no instance per request.
func (e *env) proxyRow(ctx context.Context, task string, spear call) (Row, error) {
	c, addr, err := e.startBaseline(ctx, "proxyhttp")
	if err != nil {
		return Row{}, err
	}
	defer e.procs.kill(c)
	base := httpEcho(newHTTPClient(), "http://"+addr+"/", e.p.payload)
	r := e.compare(ctx, "sync-wasm-proxy-c32", 32, spear, "warm Go http upstream behind a reverse proxy", base, target{minThr: 1.2})
	r.Note = joinNote(r.Note, "Spear runs a fresh wasm instance per call; the baseline's function is a warm process")
	return r, nil
}
