// Package harness is Spear's benchmark harness: it builds the node and tiny
// baseline programs that do only the irreducible work, drives both over the
// network with a Go load generator in interleaved rounds (A B A B ...), and
// reports each figure as a ratio against its baseline measured in the same
// run, so that the noise of a shared machine cancels out.
//
// The command is bench/cmd/spear-bench; see Run. The baselines it compares
// against are in bench/baseline, the functions in bench/fn.
package harness

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
)

// Options configures Run.
type Options struct {
	// Root is the repository root (it holds go.mod).
	Root string
	// Quick runs fewer, shorter rounds and smaller populations.
	Quick bool
	// Rows selects row groups (see Groups); empty runs all.
	Rows []string
	// Out is where results are written; empty writes nothing.
	Out string
	// Docker is "auto" (use an engine if one answers) or "off".
	Docker string
	// Log receives progress lines.
	Log io.Writer
}

// Groups are the row groups, in the order they run.
var Groups = []string{"sync-wasm", "sync-process", "sync-docker", "stream", "scale", "cancel", "async", "estimate", "cold", "memory", "status", "store", "sandbox", "cluster", "graph"}

// params are the sizes of a run.
type params struct {
	rounds      int
	roundDur    time.Duration
	warmup      time.Duration
	asyncN      int
	statusBig   int
	statusSmall int
	queuedN     int
	cancelN     int
	coldN       int
	restarts    int
	scaleTasks  int
	payload     []byte
}

func paramsFor(quick bool) params {
	p := params{
		rounds: 5, roundDur: 3 * time.Second, warmup: time.Second,
		asyncN: 10_000, statusBig: 1_000_000, statusSmall: 1_000, queuedN: 100_000,
		cancelN: 20, coldN: 5, restarts: 3, scaleTasks: 100,
	}
	if quick {
		p.rounds, p.roundDur, p.warmup = 2, time.Second, 300*time.Millisecond
		p.asyncN, p.statusBig, p.queuedN = 2_000, 100_000, 10_000
		p.cancelN, p.coldN, p.restarts = 5, 3, 1
	}
	p.payload = []byte(strings.Repeat("spear-bench-payload-", 4)[:64])
	return p
}

// env is the state shared by the rows of one run.
type env struct {
	opts   Options
	p      params
	tmp    string
	procs  procs
	spear  string // the node binary
	bins   map[string]string
	docker string // engine version; empty without one
	main   *node
}

func (e *env) logf(format string, args ...any) {
	if e.opts.Log != nil {
		fmt.Fprintf(e.opts.Log, "[%s] "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
}

// Run runs the benchmark and returns its report. Rows that fail are
// reported with StatusError; Run itself fails only when nothing could be
// built.
func Run(ctx context.Context, opts Options) (*Report, error) {
	started := time.Now()
	for _, g := range opts.Rows {
		if !slices.Contains(Groups, g) {
			return nil, fmt.Errorf("unknown row group %q (have %s): %w", g, strings.Join(Groups, ","), errdefs.ErrInvalidArgument)
		}
	}
	p := paramsFor(opts.Quick)
	tmp, err := os.MkdirTemp("", "spear-bench-")
	if err != nil {
		return nil, err
	}
	e := &env{opts: opts, p: p, tmp: tmp, bins: map[string]string{}}
	defer func() {
		e.procs.killAll()
		_ = os.RemoveAll(tmp)
	}()
	if err := e.build(ctx); err != nil {
		return nil, err
	}
	rep := &Report{Mode: "full", Rounds: e.p.rounds, RoundDur: e.p.roundDur.String()}
	if opts.Quick {
		rep.Mode = "quick"
	}
	rep.Machine = describeMachine(e.docker)
	groups := opts.Rows
	if len(groups) == 0 {
		groups = Groups
	}
	for _, g := range Groups {
		if !slices.Contains(groups, g) || ctx.Err() != nil {
			continue
		}
		e.logf("row group %s", g)
		rows := e.runGroup(ctx, g)
		for _, r := range rows {
			e.logf("  %s: %s %s", r.ID, r.Status, ratioCell(r))
		}
		rep.Rows = append(rep.Rows, rows...)
	}
	if e.main != nil {
		e.stopNode(e.main)
	}
	rep.Elapsed = time.Since(started)
	return rep, ctx.Err()
}

func (e *env) runGroup(ctx context.Context, g string) (rows []Row) {
	defer func() {
		if v := recover(); v != nil {
			rows = append(rows, Row{ID: g, Status: StatusError, Note: fmt.Sprintf("panic: %v", v)})
		}
	}()
	fail := func(err error) []Row {
		return []Row{{ID: g, Status: StatusError, Note: err.Error()}}
	}
	needMain := g != "memory" && g != "status" && g != "store" && g != "cluster"
	if needMain && e.main == nil {
		n, err := e.startMainNode(ctx)
		if err != nil {
			return fail(err)
		}
		e.main = n
	}
	var err error
	switch g {
	case "sync-wasm":
		rows, err = e.syncRows(ctx, "wasm")
	case "sync-process":
		if rows, err = e.syncRows(ctx, "process"); err == nil {
			var more []Row
			more, err = e.sparesRows(ctx)
			rows = append(rows, more...)
		}
	case "sync-docker":
		rows, err = e.syncRows(ctx, "docker")
	case "stream":
		rows, err = e.streamRows(ctx)
	case "scale":
		rows, err = e.scaleRows(ctx)
	case "cancel":
		rows, err = e.cancelRows(ctx)
	case "async":
		rows, err = e.asyncRows(ctx)
	case "estimate":
		rows, err = e.estimateRows(ctx)
	case "cold":
		rows, err = e.coldRows(ctx)
	case "memory":
		rows, err = e.memoryRows(ctx)
	case "status":
		rows, err = e.statusRows(ctx)
	case "store":
		rows, err = e.storeRows(ctx)
	case "sandbox":
		rows, err = e.sandboxRows(ctx)
	case "cluster":
		rows, err = e.clusterRows(ctx)
	case "graph":
		rows, err = e.graphRows(ctx)
	}
	if err != nil {
		return append(rows, fail(err)...)
	}
	return rows
}

// build builds the node, the baselines and the native functions, and the
// docker images when an engine answers.
func (e *env) build(ctx context.Context) error {
	bin := filepath.Join(e.opts.Root, "bin")
	e.spear = filepath.Join(bin, "spear")
	e.logf("building bin/spear and the baselines")
	if err := e.run(ctx, e.opts.Root, "go", "build", "-o", e.spear, "./cmd/spear"); err != nil {
		return err
	}
	for _, b := range []string{"wasmhttp", "exechttp", "noop", "proxyhttp"} {
		out := filepath.Join(e.tmp, b)
		if err := e.run(ctx, e.opts.Root, "go", "build", "-o", out, "./bench/baseline/"+b); err != nil {
			return err
		}
		e.bins[b] = out
	}
	e.bins["echo.wasm"] = filepath.Join(e.opts.Root, "samples", "wasm", "echo.wasm")
	e.bins["wsleep.wasm"] = filepath.Join(e.opts.Root, "bench", "fn", "wsleep.wasm")
	e.bins["spin.wasm"] = filepath.Join(e.opts.Root, "internal", "runtime", "wasm", "testdata", "spin.wasm")
	static := true
	for _, fn := range []string{"echo", "sleep", "ticks", "cat"} {
		src := filepath.Join(e.opts.Root, "bench", "fn", fn+".c")
		out := filepath.Join(e.tmp, fn)
		if err := e.run(ctx, "", "gcc", "-static", "-O2", "-o", out, src); err != nil {
			static = false
			if err := e.run(ctx, "", "gcc", "-O2", "-o", out, src); err != nil {
				return err
			}
		}
		e.bins[fn] = out
	}
	if e.opts.Docker == "off" {
		return nil
	}
	vctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := exec.CommandContext(vctx, "docker", "version", "--format", "{{.Server.Version}}").Output()
	if err != nil || !static {
		e.logf("docker rows skipped: no engine answers (or no static echo): %v", err)
		return nil
	}
	for _, fn := range []string{"echo", "sleep"} {
		dir := filepath.Join(e.tmp, "img-"+fn)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		b, err := os.ReadFile(e.bins[fn])
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "fn"), b, 0o755); err != nil {
			return err
		}
		df := "FROM scratch\nCOPY fn /fn\nENTRYPOINT [\"/fn\"]\n"
		if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
			return err
		}
		if err := e.run(ctx, dir, "docker", "build", "-q", "-t", imageOf(fn), "."); err != nil {
			e.logf("docker rows skipped: %v", err)
			return nil
		}
	}
	e.docker = strings.TrimSpace(string(v))
	return nil
}

func imageOf(fn string) string { return "spear-bench-" + fn + ":latest" }

func (e *env) run(ctx context.Context, dir, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %w: %s", name, strings.Join(args, " "), errdefs.ErrInternal, err, strings.TrimSpace(string(out)))
	}
	return nil
}
