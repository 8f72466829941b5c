// Package soak runs a long mixed load against a real node and checks that
// it does not leak: it builds and starts `spear serve` with its own data
// directory, runs sync, async and stream invocations on every runtime the
// node has (process, wasm, and docker when the sample image exists), with
// cancels, timeouts and failing functions, for a configured duration, and
// compares the node's goroutines, open file descriptors, resident memory
// and JetStream storage after the load with their values after a warm-up.
//
// The run fails when
//
//   - goroutines end above 2 x start + 50,
//   - open file descriptors end above 2 x start + 20,
//   - resident memory ends above 2 x start + 64 MiB,
//   - JetStream storage grew by more than Config.MaxStorageGrowth (the
//     records of every execution are kept for the retention period, so
//     storage grows with the load; the bound catches runaway growth),
//   - an accepted async execution is not terminal within Config.Settle
//     after the load stops, or
//   - a function process (the sleeper used for timeouts and cancels)
//     outlives the load, or
//   - an invocation ended otherwise than its kind must (an echo that did
//     not complete, a failing function that did not fail, ...).
package soak

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	pb "github.com/spear-go/spear/api/spearlet"
)

// Config configures a soak run.
type Config struct {
	// Root is the repository root: spear is built from it and its samples
	// are registered.
	Root string
	// Bin is a prebuilt spear binary; empty builds one from Root.
	Bin string
	// Duration of the load (default 10m).
	Duration time.Duration
	// Rate is invocations started per second (default 8).
	Rate float64
	// MaxInFlight bounds concurrent invocations (default 16).
	MaxInFlight int
	// Warmup runs load before the start sample (default 20s).
	Warmup time.Duration
	// Settle bounds how long accepted async executions may take to end
	// after the load (default 60s).
	Settle time.Duration
	// MaxStorageGrowth bounds JetStream storage growth (default 1 GiB: large
	// outputs are kept for the retention).
	MaxStorageGrowth int64
	// Docker: "auto" (default) or "off".
	Docker string
	// Keep keeps the data directory.
	Keep bool
	// Out receives progress and the report (default os.Stdout).
	Out io.Writer
}

func (c *Config) defaults() {
	if c.Duration <= 0 {
		c.Duration = 10 * time.Minute
	}
	if c.Rate <= 0 {
		c.Rate = 8
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 16
	}
	if c.Warmup <= 0 {
		c.Warmup = 20 * time.Second
	}
	if c.Settle <= 0 {
		c.Settle = 60 * time.Second
	}
	if c.MaxStorageGrowth <= 0 {
		c.MaxStorageGrowth = 1 << 30
	}
	if c.Docker == "" {
		c.Docker = "auto"
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
}

// Sample is the node's resource use at one moment.
type Sample struct {
	Goroutines int
	FDs        int
	RSS        int64
	JetStream  int64
}

// Report is the outcome of a run.
type Report struct {
	Start, End Sample
	// Ops counts invocations by kind and outcome ("ok" or "unexpected").
	Ops map[string]map[string]int
	// Unexpected lists up to 20 invocations that ended wrongly.
	Unexpected []string
	// NotTerminal lists accepted async executions still live after Settle.
	NotTerminal []string
	// Failures lists every broken bound; empty means the run passed.
	Failures []string
}

// Run runs a soak; the error is for a run that could not be carried out,
// a failed check is in Report.Failures.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.defaults()
	work, err := os.MkdirTemp("", "spear-soak-")
	if err != nil {
		return nil, err
	}
	if cfg.Keep {
		fmt.Fprintln(cfg.Out, "soak: keeping", work)
	} else {
		defer os.RemoveAll(work)
	}
	bin := cfg.Bin
	if bin == "" {
		bin = filepath.Join(work, "spear")
		fmt.Fprintln(cfg.Out, "soak: building spear")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/spear")
		cmd.Dir, cmd.Stdout, cmd.Stderr = cfg.Root, cfg.Out, cfg.Out
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("building spear: %w", err)
		}
	}
	n, err := startNode(ctx, bin, work, cfg)
	if err != nil {
		return nil, err
	}
	defer n.stop()

	l := &load{n: n, cfg: cfg, ops: map[string]map[string]int{}}
	if err := l.setup(ctx, work); err != nil {
		return nil, err
	}
	fmt.Fprintf(cfg.Out, "soak: node %s pid %d; kinds: %s\n", n.addr, n.cmd.Process.Pid, strings.Join(l.kindNames(), ", "))

	fmt.Fprintf(cfg.Out, "soak: warm-up %v\n", cfg.Warmup)
	l.run(ctx, cfg.Warmup)
	l.settle(ctx)
	start, err := n.sample(ctx)
	if err != nil {
		return nil, err
	}
	l.reset()
	fmt.Fprintf(cfg.Out, "soak: load %v at %.1f/s\n", cfg.Duration, cfg.Rate)
	l.run(ctx, cfg.Duration)
	fmt.Fprintf(cfg.Out, "soak: load done; waiting up to %v for async executions\n", cfg.Settle)
	notTerminal := l.settle(ctx)
	// Let the node drop idle connections and finished work before the end
	// sample, as it would between bursts.
	time.Sleep(5 * time.Second)
	end, err := n.sample(ctx)
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	rep := &Report{Start: start, End: end, Ops: l.ops, Unexpected: l.unexpected, NotTerminal: notTerminal}
	check := func(name string, start, end, bound int64) {
		if end > bound {
			rep.Failures = append(rep.Failures, fmt.Sprintf("%s grew from %d to %d, above the bound %d", name, start, end, bound))
		}
	}
	check("goroutines", int64(start.Goroutines), int64(end.Goroutines), 2*int64(start.Goroutines)+50)
	check("open fds", int64(start.FDs), int64(end.FDs), 2*int64(start.FDs)+20)
	check("rss bytes", start.RSS, end.RSS, 2*start.RSS+64<<20)
	check("jetstream bytes", start.JetStream, end.JetStream, start.JetStream+cfg.MaxStorageGrowth)
	if len(notTerminal) > 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf("%d accepted async executions not terminal %v after the load", len(notTerminal), cfg.Settle))
	}
	if l.unexpectedN > 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf("%d invocations ended unexpectedly", l.unexpectedN))
	}
	if stray := processesMentioning(filepath.Join(work, "sleeper.sh")); len(stray) > 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf("function processes %v still running after the load", stray))
	}
	if !n.running() {
		rep.Failures = append(rep.Failures, "the node exited during the run")
	}
	rep.Print(cfg.Out, cfg)
	return rep, nil
}

// Print writes the before/after table, the invocation counts and the
// failures.
func (r *Report) Print(w io.Writer, cfg Config) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "metric\tstart\tend\tbound\t")
	row := func(name string, s, e, b int64) { fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t\n", name, s, e, b) }
	row("goroutines", int64(r.Start.Goroutines), int64(r.End.Goroutines), 2*int64(r.Start.Goroutines)+50)
	row("open fds", int64(r.Start.FDs), int64(r.End.FDs), 2*int64(r.Start.FDs)+20)
	row("rss MiB", r.Start.RSS>>20, r.End.RSS>>20, (2*r.Start.RSS+64<<20)>>20)
	row("jetstream MiB", r.Start.JetStream>>20, r.End.JetStream>>20, (r.Start.JetStream+cfg.MaxStorageGrowth)>>20)
	_ = tw.Flush()
	kinds := make([]string, 0, len(r.Ops))
	for k := range r.Ops {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "invocation\tok\tunexpected\t")
	for _, k := range kinds {
		fmt.Fprintf(tw, "%s\t%d\t%d\t\n", k, r.Ops[k]["ok"], r.Ops[k]["unexpected"])
	}
	_ = tw.Flush()
	for _, u := range r.Unexpected {
		fmt.Fprintln(w, "unexpected:", u)
	}
	for _, id := range r.NotTerminal[:min(len(r.NotTerminal), 20)] {
		fmt.Fprintln(w, "not terminal:", id)
	}
	if len(r.Failures) == 0 {
		fmt.Fprintln(w, "\nsoak: PASS")
		return
	}
	for _, f := range r.Failures {
		fmt.Fprintln(w, "FAIL:", f)
	}
}

// node is a running spear serve.
type node struct {
	cmd     *exec.Cmd
	addr    string
	dataDir string
	exited  chan struct{}
	conn    *grpc.ClientConn
	client  pb.FunctionServiceClient
	http    *http.Client
}

func startNode(ctx context.Context, bin, work string, cfg Config) (*node, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	_ = l.Close()
	n := &node{addr: addr, dataDir: filepath.Join(work, "data"), exited: make(chan struct{}), http: &http.Client{Timeout: 30 * time.Second}}
	logf, err := os.Create(filepath.Join(work, "node.log"))
	if err != nil {
		return nil, err
	}
	n.cmd = exec.Command(bin, "serve", "--data-dir", n.dataDir, "--listen", addr,
		"--samples", filepath.Join(cfg.Root, "samples"), "--artifact-root", work, "--pprof", "--docker", cfg.Docker, "--log-level", "warn")
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SPEAR_") {
			env = append(env, kv)
		}
	}
	n.cmd.Env = env
	if err := n.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() { _ = n.cmd.Wait(); logf.Close(); close(n.exited) }()
	n.conn, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		n.stop()
		return nil, err
	}
	n.client = pb.NewFunctionServiceClient(n.conn)
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		h, err := n.client.GetHealth(c, &pb.GetHealthRequest{})
		cancel()
		if err == nil && h.GetStatus() == "healthy" {
			return n, nil
		}
		if !n.running() || time.Now().After(deadline) || ctx.Err() != nil {
			n.stop()
			return nil, fmt.Errorf("node not ready (%v); log in %s", err, filepath.Join(work, "node.log"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (n *node) running() bool {
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

func (n *node) stop() {
	if n.conn != nil {
		_ = n.conn.Close()
	}
	if !n.running() {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(60 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.exited
	}
}

// sample measures the node.
func (n *node) sample(ctx context.Context) (Sample, error) {
	var s Sample
	pid := n.cmd.Process.Pid
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.addr+"/debug/pprof/goroutine?debug=1", nil)
	if err != nil {
		return s, err
	}
	resp, err := n.http.Do(req)
	if err != nil {
		return s, fmt.Errorf("goroutine profile: %w", err)
	}
	first, err := bufio.NewReader(resp.Body).ReadString('\n')
	resp.Body.Close()
	if err != nil {
		return s, fmt.Errorf("goroutine profile: %w", err)
	}
	// "goroutine profile: total N"
	f := strings.Fields(first)
	if len(f) == 0 {
		return s, fmt.Errorf("goroutine profile: unexpected first line %q", first)
	}
	if s.Goroutines, err = strconv.Atoi(f[len(f)-1]); err != nil {
		return s, fmt.Errorf("goroutine profile: unexpected first line %q", first)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.FDs = len(fds)
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return s, fmt.Errorf("VmRSS %q: %w", v, err)
			}
			s.RSS = kb << 10
		}
	}
	err = filepath.WalkDir(filepath.Join(n.dataDir, "jetstream"), func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // a file removed while walking
			}
			return err
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				s.JetStream += fi.Size()
			}
		}
		return nil
	})
	return s, err
}

// kind is one sort of invocation.
type kind struct {
	name   string
	weight int
	do     func(ctx context.Context, l *load) error // nil error: as expected
}

// load runs invocations and keeps their outcomes.
type load struct {
	n     *node
	cfg   Config
	kinds []kind

	mu          sync.Mutex
	ops         map[string]map[string]int
	unexpected  []string
	unexpectedN int
	accepted    []string // async execution ids
}

func (l *load) kindNames() []string {
	var out []string
	for _, k := range l.kinds {
		out = append(out, k.name)
	}
	return out
}

func (l *load) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops, l.unexpected, l.unexpectedN = map[string]map[string]int{}, nil, 0
}

func (l *load) record(name string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ops[name] == nil {
		l.ops[name] = map[string]int{}
	}
	if err == nil {
		l.ops[name]["ok"]++
		return
	}
	l.ops[name]["unexpected"]++
	l.unexpectedN++
	if len(l.unexpected) < 20 {
		l.unexpected = append(l.unexpected, name+": "+err.Error())
	}
}

func (l *load) accept(id string) {
	l.mu.Lock()
	l.accepted = append(l.accepted, id)
	l.mu.Unlock()
}

// sleeperScript sleeps $SLEEP seconds (default 30).
const sleeperScript = "#!/bin/sh\nsleep \"${SLEEP:-30}\"\necho slept\n"

func (l *load) setup(ctx context.Context, work string) error {
	sleeper := filepath.Join(work, "sleeper.sh")
	if err := os.WriteFile(sleeper, []byte(sleeperScript), 0o755); err != nil {
		return err
	}
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := l.n.client.RegisterTask(c, &pb.RegisterTaskRequest{
		TaskId: "soak-sleeper", ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: sleeper},
	}); err != nil {
		return fmt.Errorf("registering the sleeper: %w", err)
	}
	upper := []string{"upper", "wasm-upper"}
	if t, err := l.n.client.GetTask(c, &pb.GetTaskRequest{TaskId: "docker-upper"}); err == nil && t.GetFound() {
		upper = append(upper, "docker-upper")
	}
	for _, task := range []string{"echo", "wasm-echo"} {
		l.kinds = append(l.kinds,
			kind{"sync " + task, 3, syncEcho(task, false)},
			kind{"async " + task, 3, asyncEcho(task, false)})
	}
	for _, task := range upper {
		w := 2
		if task == "docker-upper" {
			w = 1 // a container start is costly on two cores
		}
		l.kinds = append(l.kinds,
			kind{"sync " + task, w, syncEcho(task, true)},
			kind{"async " + task, w, asyncEcho(task, true)})
	}
	for _, task := range []string{"ticker", "wasm-ticker"} {
		l.kinds = append(l.kinds, kind{"stream " + task, 2, streamTicker(task)})
	}
	l.kinds = append(l.kinds,
		kind{"sync fail", 2, syncFail},
		kind{"async fail", 1, asyncFail},
		kind{"sync timeout", 1, syncTimeout},
		kind{"async cancel", 1, asyncCancel},
		kind{"stream client cancel", 1, streamClientCancel},
	)
	return l.setupLarge(c, work)
}

// run starts invocations at the configured rate for d.
func (l *load) run(ctx context.Context, d time.Duration) {
	total := 0
	for _, k := range l.kinds {
		total += k.weight
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	sem := make(chan struct{}, l.cfg.MaxInFlight)
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Duration(float64(time.Second) / l.cfg.Rate))
	defer tick.Stop()
	var started atomic.Int64
	report := time.NewTicker(30 * time.Second)
	defer report.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-report.C:
			fmt.Fprintf(l.cfg.Out, "soak: %d invocations started\n", started.Load())
		case <-tick.C:
			select {
			case sem <- struct{}{}:
			default:
				continue // saturated: skip this tick
			}
			pick := rand.IntN(total)
			var k kind
			for _, k = range l.kinds {
				if pick < k.weight {
					break
				}
				pick -= k.weight
			}
			started.Add(1)
			wg.Go(func() {
				defer func() { <-sem }()
				// Each invocation has its own bound, independent of the
				// load's end, so that running ones finish.
				c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 90*time.Second)
				defer cancel()
				l.record(k.name, k.do(c, l))
			})
		}
	}
}

// settle waits until every accepted async execution is terminal, or
// Settle passes, and returns those that are not.
func (l *load) settle(ctx context.Context) []string {
	l.mu.Lock()
	ids := l.accepted
	l.accepted = nil
	l.mu.Unlock()
	deadline := time.Now().Add(l.cfg.Settle)
	var pending []string
	for _, id := range ids {
		for {
			c, cancel := context.WithTimeout(ctx, 10*time.Second)
			st, err := l.n.client.GetExecutionStatus(c, &pb.GetExecutionStatusRequest{ExecutionId: id})
			cancel()
			if err == nil && st.GetFound() && st.GetResult().GetStatus().Terminal() {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				pending = append(pending, fmt.Sprintf("%s (%v, %v)", id, st.GetResult().GetStatus(), err))
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return pending
}

func outputOf(a *anypb.Any) string {
	var v wrapperspb.BytesValue
	if a == nil || a.UnmarshalTo(&v) != nil {
		return ""
	}
	return string(v.GetValue())
}

func request(task string, mode pb.ExecutionMode, in []byte) *pb.InvokeFunctionRequest {
	r := &pb.InvokeFunctionRequest{
		InvocationType: pb.InvocationType_INVOCATION_TYPE_EXISTING_TASK, TaskId: task, ExecutionMode: mode,
		Context: &pb.ExecutionContext{},
	}
	if in != nil {
		r.Parameters = []*pb.FunctionParameter{{Name: "input", Value: pb.BytesAny(in)}}
	}
	return r
}

// payload is a random input of up to 4 KiB of lower-case letters.
func payload() []byte {
	b := make([]byte, 1+rand.IntN(4096))
	for i := range b {
		b[i] = 'a' + byte(rand.IntN(26))
	}
	return b
}

func want(in []byte, upper bool) string {
	if upper {
		return string(bytes.ToUpper(in))
	}
	return string(in)
}

func syncEcho(task string, upper bool) func(context.Context, *load) error {
	return func(ctx context.Context, l *load) error {
		in := payload()
		resp, err := l.n.client.InvokeFunction(ctx, request(task, pb.ExecutionMode_EXECUTION_MODE_SYNC, in))
		if err != nil {
			return err
		}
		if resp.GetResult().GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED {
			return fmt.Errorf("%s: %v %s", resp.GetExecutionId(), resp.GetResult().GetStatus(), resp.GetMessage())
		}
		if outputOf(resp.GetResult().GetResult()) != want(in, upper) {
			return fmt.Errorf("%s: wrong output", resp.GetExecutionId())
		}
		return nil
	}
}

func asyncEcho(task string, _ bool) func(context.Context, *load) error {
	return func(ctx context.Context, l *load) error {
		resp, err := l.n.client.InvokeFunction(ctx, request(task, pb.ExecutionMode_EXECUTION_MODE_ASYNC, payload()))
		if err != nil {
			return err
		}
		if !resp.GetSuccess() || resp.GetExecutionId() == "" {
			return fmt.Errorf("not accepted: %s", resp.GetMessage())
		}
		l.accept(resp.GetExecutionId())
		return nil
	}
}

func syncFail(ctx context.Context, l *load) error {
	resp, err := l.n.client.InvokeFunction(ctx, request("fail", pb.ExecutionMode_EXECUTION_MODE_SYNC, []byte("x")))
	if err != nil {
		return err
	}
	if r := resp.GetResult(); r.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_FAILED || r.GetErrorCode() == "" {
		return fmt.Errorf("%s: %v %q, want FAILED with an error code", resp.GetExecutionId(), r.GetStatus(), r.GetErrorCode())
	}
	return nil
}

func asyncFail(ctx context.Context, l *load) error {
	resp, err := l.n.client.InvokeFunction(ctx, request("fail", pb.ExecutionMode_EXECUTION_MODE_ASYNC, []byte("x")))
	if err != nil {
		return err
	}
	l.accept(resp.GetExecutionId())
	return nil
}

func syncTimeout(ctx context.Context, l *load) error {
	req := request("soak-sleeper", pb.ExecutionMode_EXECUTION_MODE_SYNC, nil)
	req.Context.TimeoutMs = 300
	resp, err := l.n.client.InvokeFunction(ctx, req)
	if err != nil {
		return err
	}
	if s := resp.GetResult().GetStatus(); s != pb.ExecutionStatus_EXECUTION_STATUS_TIMEOUT {
		return fmt.Errorf("%s: %v, want TIMEOUT", resp.GetExecutionId(), s)
	}
	return nil
}

func asyncCancel(ctx context.Context, l *load) error {
	resp, err := l.n.client.InvokeFunction(ctx, request("soak-sleeper", pb.ExecutionMode_EXECUTION_MODE_ASYNC, nil))
	if err != nil {
		return err
	}
	id := resp.GetExecutionId()
	l.accept(id)
	time.Sleep(time.Duration(rand.IntN(500)) * time.Millisecond)
	c, err := l.n.client.CancelExecution(ctx, &pb.CancelExecutionRequest{ExecutionId: id, Reason: "soak"})
	if err != nil {
		return fmt.Errorf("cancel %s: %w", id, err)
	}
	if !c.GetSuccess() && !c.GetFinalStatus().Terminal() {
		return fmt.Errorf("cancel %s: refused while %v: %s", id, c.GetFinalStatus(), c.GetMessage())
	}
	return nil
}

func streamTicker(task string) func(context.Context, *load) error {
	return func(ctx context.Context, l *load) error {
		req := request(task, pb.ExecutionMode_EXECUTION_MODE_STREAM, nil)
		req.Context.Environment = map[string]string{"TICKS": "3"}
		s, err := l.n.client.StreamFunction(ctx, req)
		if err != nil {
			return err
		}
		var out strings.Builder
		for {
			m, err := s.Recv()
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("stream ended without a final message")
			}
			if err != nil {
				return err
			}
			out.WriteString(outputOf(m.GetChunkData()))
			if m.GetIsFinal() {
				if m.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || strings.Count(out.String(), "tick ") != 3 {
					return fmt.Errorf("%s: final %v, output %q", m.GetExecutionId(), m.GetStatus(), out.String())
				}
				return nil
			}
		}
	}
}

func streamClientCancel(ctx context.Context, l *load) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := l.n.client.StreamFunction(ctx, request("soak-sleeper", pb.ExecutionMode_EXECUTION_MODE_STREAM, nil))
	if err != nil {
		return err
	}
	if _, err := s.Recv(); err != nil { // the PENDING message
		return err
	}
	time.Sleep(time.Duration(100+rand.IntN(400)) * time.Millisecond)
	cancel()
	for {
		_, err := s.Recv()
		if err == nil {
			continue
		}
		if status.Code(err) == codes.Canceled {
			return nil
		}
		return fmt.Errorf("after the client cancelled: %w", err)
	}
}

// processesMentioning lists the pids of processes, other than this one,
// whose command line mentions needle.
func processesMentioning(needle string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(needle)) {
			pids = append(pids, pid)
		}
	}
	return pids
}
