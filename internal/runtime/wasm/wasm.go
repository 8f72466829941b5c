// Package wasm is Spear's WebAssembly runtime: it runs WASI (preview 1)
// modules in-process on wazero, in pure Go.
//
// A module is compiled once per task (keyed by Artifact.TaskID and
// Artifact.Digest, or by file path, modification time and size when the
// digest is unknown) and every invocation gets a fresh, isolated instance:
// its own scratch directory as its file system, no network, real clocks,
// standard input from the invocation's Input, standard output and standard
// error written straight to the invocation's writers as the guest writes
// them.
//
// Isolation: a guest sees no host directory but its own per-execution
// scratch directory, mounted as "/" (with an empty /tmp), made on its
// first file system call and removed after the run; it cannot make links,
// nor climb out with "..".
// Its random source is crypto/rand and its clocks are the host's real wall
// and monotonic clocks (wazero's defaults are deterministic fakes); its
// sleeps really sleep. Its linear memory is capped at the invocation's
// memory limit, in 64 KiB pages.
//
// Exits map to Result.ExitCode: proc_exit(n) is ExitCode n, and a trap
// (unreachable, out-of-bounds access, ...) is ExitCode 134 (like SIGABRT)
// with the trap written to standard error. When the invocation's context
// ends, the guest is stopped — even in a CPU-bound loop or a sleep — and Run
// returns an error wrapping ctx.Err().
//
// Memory: wazero caps linear memory per wazero runtime, not per instance, so
// Runtime keeps one wazero runtime per distinct memory ceiling (in 64 KiB
// pages) it has been asked for; they share one compilation cache, so
// machine code is compiled once per module whatever the ceiling.
package wasm

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/runtime"
)

// TrapExitCode is the ExitCode of a function that trapped.
const TrapExitCode = 134

const (
	startFunc      = "_start"
	initializeFunc = "_initialize"
	wasiModule     = wasi_snapshot_preview1.ModuleName
	pageSize       = 65536
	maxPages       = 65536 // 4 GiB, the wasm32 maximum
)

// Options configure a Runtime.
type Options struct {
	// CacheDir is wazero's on-disk compilation cache directory, so that a
	// restarted node does not recompile modules. "" keeps compiled code in
	// memory only.
	CacheDir string
	// ScratchDir holds the per-execution scratch directories; what an
	// earlier run of the node left there is removed at New. "" uses the
	// system's temporary directory (and removes nothing at New).
	ScratchDir string
	// Logger receives debug and warning logs; nil discards them.
	Logger *slog.Logger
}

// Runtime runs WASI modules. It implements runtime.Runtime,
// runtime.CapabilityReporter, runtime.Validator, runtime.Forgetter,
// runtime.CacheReporter and runtime.Closer, and is safe for concurrent use.
type Runtime struct {
	log   *slog.Logger
	cache wazero.CompilationCache
	// compiles counts module compilations (compiled-module cache misses).
	compiles atomic.Int64
	// held counts the compiled modules in memory (not yet closed).
	held atomic.Int64
	// mem recycles instances' linear memories.
	mem memPool
	// config is what every instance's configuration starts from.
	config wazero.ModuleConfig
	// scratch is where per-execution scratch directories are made.
	scratch string

	mu      sync.Mutex
	closed  bool
	engines map[uint32]*engine // by memory ceiling in pages; 0 = none
}

var (
	_ runtime.Runtime            = (*Runtime)(nil)
	_ runtime.CapabilityReporter = (*Runtime)(nil)
	_ runtime.Validator          = (*Runtime)(nil)
	_ runtime.Closer             = (*Runtime)(nil)

	_ runtime.Forgetter     = (*Runtime)(nil)
	_ runtime.CacheReporter = (*Runtime)(nil)
)

// New returns a Runtime. Close it to release compiled code.
func New(ctx context.Context, opts Options) (*Runtime, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	scratch := opts.ScratchDir
	if scratch == "" {
		scratch = os.TempDir()
	} else if err := prepareScratchBase(scratch); err != nil {
		return nil, err
	}
	cache := wazero.NewCompilationCache()
	if opts.CacheDir != "" {
		var err error
		if cache, err = wazero.NewCompilationCacheWithDir(opts.CacheDir); err != nil {
			return nil, fmt.Errorf("wasm: compilation cache %s: %w: %w", opts.CacheDir, errdefs.ErrInvalidArgument, err)
		}
	}
	r := &Runtime{
		log:     log.With("runtime", string(runtime.TypeWasm)),
		cache:   cache,
		engines: make(map[uint32]*engine),
		scratch: scratch,
		config: wazero.NewModuleConfig().
			WithName(""). // anonymous: concurrent instances never clash
			WithStartFunctions().
			WithSysWalltime().
			WithSysNanotime().
			WithRandSource(crand.Reader),
	}
	// Start the unlimited engine now, so that a broken setup fails here.
	if _, err := r.engine(ctx, 0); err != nil {
		_ = cache.Close(ctx)
		return nil, err
	}
	return r, nil
}

// Type returns runtime.TypeWasm.
func (r *Runtime) Type() runtime.Type { return runtime.TypeWasm }

// Capabilities implements runtime.CapabilityReporter: memory is limited
// and measured (linear memory), and a guest cannot catch a signal, so every
// stop is immediate.
func (r *Runtime) Capabilities() runtime.Capabilities {
	return runtime.Capabilities{MemoryLimit: true, MemoryPeak: true}
}

// Validate compiles the module a points to, checks that it is a WASI
// (preview 1) command or reactor, and keeps it compiled for later runs.
func (r *Runtime) Validate(ctx context.Context, a runtime.Artifact) error {
	if err := checkType(a); err != nil {
		return err
	}
	e, err := r.engine(ctx, 0)
	if err != nil {
		return err
	}
	m, err := e.acquire(ctx, a)
	if err != nil {
		return err
	}
	e.release(ctx, m)
	return nil
}

// Close releases every compiled module and wazero runtime. Runs still in
// flight are stopped; later calls fail with errdefs.ErrUnavailable.
func (r *Runtime) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	engines := r.engines
	r.engines = nil
	r.mu.Unlock()

	var errs []error
	for _, e := range engines {
		if err := e.rt.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := r.cache.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("wasm: close: %w: %w", errdefs.ErrInternal, err)
	}
	return nil
}

// Run instantiates the module of inv.Artifact and runs inv.Function in it:
// _start for the default function, otherwise the named export (after
// _initialize for a reactor).
func (r *Runtime) Run(ctx context.Context, inv *runtime.Invocation) (runtime.Result, error) {
	begin := time.Now()
	e, m, err := r.acquire(ctx, inv)
	if err != nil {
		return runtime.Result{}, err
	}
	defer e.release(ctx, m)
	calls, err := m.entryPoints(inv.Function)
	if err != nil {
		return runtime.Result{}, err
	}
	stdin, stopStdin := stdinFor(ctx, inv.Input)
	defer stopStdin()
	stdout, stderr := orDiscard(inv.Stdout), orDiscard(inv.Stderr)
	cfg, err := r.moduleConfig(ctx, inv, stdin, stdout, stderr)
	if err != nil {
		return runtime.Result{}, err
	}
	fsc, removeScratch := newScratch(r.scratch)
	defer removeScratch() // after the instance is closed
	cfg = cfg.WithFSConfig(fsc)
	mod, err := e.rt.InstantiateModule(experimental.WithMemoryAllocator(ctx, &r.mem), m.cm, cfg)
	startup := time.Since(begin)
	if err != nil {
		return runtime.Result{}, r.instantiateError(ctx, inv, err)
	}
	// Close without ctx: it must happen even when ctx has ended.
	defer func() { _ = mod.Close(context.WithoutCancel(ctx)) }()
	res, err := r.call(ctx, inv, stderr, mod, calls)
	res.Startup = startup
	return res, err
}

// acquire checks inv and returns the engine of its memory ceiling and the
// module of its artifact, compiled; release the module when done.
func (r *Runtime) acquire(ctx context.Context, inv *runtime.Invocation) (*engine, *module, error) {
	if inv == nil {
		return nil, nil, errdefs.InvalidInvocation.New("wasm: nil invocation")
	}
	if err := checkType(inv.Artifact); err != nil {
		return nil, nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("wasm: %s: %w", inv.ExecutionID, err)
	}
	pages := limitPages(inv.MemoryLimitBytes)
	e, err := r.engine(ctx, pages)
	if err != nil {
		return nil, nil, err
	}
	m, err := e.acquire(ctx, inv.Artifact)
	if err != nil {
		if pages != 0 && errdefs.InvalidArtifact.Is(err) {
			err = r.limitError(ctx, inv, err)
		}
		return nil, nil, err
	}
	return e, m, nil
}

// moduleConfig is the configuration of inv's instance: its program name,
// streams, sleep and environment.
func (r *Runtime) moduleConfig(ctx context.Context, inv *runtime.Invocation, stdin io.Reader, stdout, stderr io.Writer) (wazero.ModuleConfig, error) {
	cfg := r.config.
		WithArgs(programName(inv.Artifact)).
		WithStdin(stdin).
		WithStdout(stdout).
		WithStderr(stderr).
		WithNanosleep(sleeper(ctx))
	for _, k := range slices.Sorted(maps.Keys(inv.Env)) {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.Contains(inv.Env[k], "\x00") {
			return nil, errdefs.InvalidEnvironment.New("wasm: invalid environment variable %q", k)
		}
		cfg = cfg.WithEnv(k, inv.Env[k])
	}
	return cfg, nil
}

// instantiateError classifies an error instantiating inv's module.
func (r *Runtime) instantiateError(ctx context.Context, inv *runtime.Invocation, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("wasm: %s: %w", inv.ExecutionID, ctx.Err())
	}
	if r.isClosed() {
		return errClosed()
	}
	return errdefs.InstantiateFailed.New("wasm: %s: instantiate: %v", inv.Artifact.Location, err)
}

// call makes the calls that run the function in mod, and returns Run's
// result.
func (r *Runtime) call(ctx context.Context, inv *runtime.Invocation, stderr io.Writer, mod api.Module, calls []string) (runtime.Result, error) {
	var (
		results []uint64
		callErr error
	)
	for _, name := range calls {
		if results, callErr = mod.ExportedFunction(name).Call(ctx); callErr != nil {
			break
		}
	}
	res, err := r.outcome(ctx, inv, stderr, mod, results, callErr)
	// Linear memory never shrinks: a guest that failed with its memory
	// within the last quarter of its ceiling was, in practice, refused
	// memory (allocators grow in steps and give up on the one that does not
	// fit).
	if err == nil && res.ExitCode != 0 && inv.MemoryLimitBytes > 0 && res.MemoryUsedBytes*4 >= inv.MemoryLimitBytes*3 {
		res.MemoryLimitHit = true
	}
	return res, err
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// outcome turns how the guest's calls ended into Run's result.
func (r *Runtime) outcome(ctx context.Context, inv *runtime.Invocation, stderr io.Writer, mod api.Module, results []uint64, callErr error) (runtime.Result, error) {
	res := runtime.Result{}
	if mem := mod.Memory(); mem != nil {
		res.MemoryUsedBytes = int64(mem.Size())
	}
	var exit *sys.ExitError
	switch {
	case callErr == nil:
		if len(results) == 1 { // an export returning i32: its status
			res.ExitCode = int(int32(uint32(results[0])))
		}
		return res, nil
	case ctx.Err() != nil:
		// The context ended first: wazero closed the instance (exit code
		// ExitCodeDeadlineExceeded / ExitCodeContextCanceled), or the guest
		// failed because its input was cut.
		return runtime.Result{}, fmt.Errorf("wasm: %s: stopped: %w", inv.ExecutionID, ctx.Err())
	case r.isClosed():
		// Close closed the instance under the guest (with exit code 0).
		return runtime.Result{}, errClosed()
	case errors.As(callErr, &exit) && exit.ExitCode() == 0:
		return res, nil
	case exit != nil:
		switch exit.ExitCode() {
		case sys.ExitCodeDeadlineExceeded:
			return runtime.Result{}, fmt.Errorf("wasm: %s: stopped: %w", inv.ExecutionID, context.DeadlineExceeded)
		case sys.ExitCodeContextCanceled:
			return runtime.Result{}, fmt.Errorf("wasm: %s: stopped: %w", inv.ExecutionID, context.Canceled)
		}
		res.ExitCode = int(int32(exit.ExitCode()))
		return res, nil
	default:
		r.log.DebugContext(ctx, "wasm function trapped", "execution_id", inv.ExecutionID,
			"task_id", inv.Artifact.TaskID, "error", callErr)
		_, _ = fmt.Fprintf(stderr, "wasm trap: %v\n", callErr)
		res.ExitCode = TrapExitCode
		return res, nil
	}
}

func (r *Runtime) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

func errClosed() error {
	return errdefs.RuntimeClosed.New("wasm: runtime is closed")
}

// limitError explains a failed compile under a memory ceiling: when the
// module compiles without the ceiling, its initial memory is over it.
func (r *Runtime) limitError(ctx context.Context, inv *runtime.Invocation, limitErr error) error {
	e, err := r.engine(ctx, 0)
	if err != nil {
		return limitErr
	}
	m, err := e.acquire(ctx, inv.Artifact)
	if err != nil {
		return err
	}
	e.release(ctx, m)
	return errdefs.MemoryLimitExceeded.New("wasm: %s: module needs more memory than the %d-byte limit: %v", inv.Artifact.Location, inv.MemoryLimitBytes, limitErr)
}

// entryPoints returns the exports to call, in order, to run function fn;
// the default function's were found when the module was compiled.
func (m *module) entryPoints(fn string) ([]string, error) {
	if fn == "" || fn == runtime.DefaultFunction {
		return m.start, m.startErr
	}
	return entryPoints(m.cm, fn)
}

// entryPoints returns the exports to call, in order, to run function fn.
func entryPoints(cm wazero.CompiledModule, fn string) ([]string, error) {
	exports := cm.ExportedFunctions()
	if fn == "" || fn == runtime.DefaultFunction {
		if _, ok := exports[startFunc]; !ok {
			return nil, errdefs.FunctionNotFound.New("wasm: module has no %s (a reactor): name the function to call", startFunc)
		}
		return []string{startFunc}, nil
	}
	def, ok := exports[fn]
	if !ok {
		return nil, errdefs.FunctionNotFound.New("wasm: module exports no function %q", fn)
	}
	if len(def.ParamTypes()) != 0 || len(def.ResultTypes()) > 1 ||
		(len(def.ResultTypes()) == 1 && def.ResultTypes()[0] != api.ValueTypeI32) {
		return nil, errdefs.InvalidFunction.New("wasm: function %q must take no parameters and return nothing or an i32 status", fn)
	}
	_, isCommand := exports[startFunc]
	if _, isReactor := exports[initializeFunc]; isReactor && !isCommand && fn != initializeFunc {
		return []string{initializeFunc, fn}, nil
	}
	return []string{fn}, nil
}

// checkWASI checks that a compiled module is a WASI preview 1 command or
// reactor whose imports the WASI host module satisfies.
func checkWASI(cm wazero.CompiledModule, wasi api.Module) error {
	exports := cm.ExportedFunctions()
	_, isCommand := exports[startFunc]
	_, isReactor := exports[initializeFunc]
	if !isCommand && !isReactor {
		return fmt.Errorf("exports neither %s nor %s", startFunc, initializeFunc)
	}
	host := wasi.ExportedFunctionDefinitions()
	for _, def := range cm.ImportedFunctions() {
		mod, name, _ := def.Import()
		if mod != wasiModule {
			return fmt.Errorf("imports %s.%s: only %s is available", mod, name, wasiModule)
		}
		h, ok := host[name]
		if !ok {
			return fmt.Errorf("imports unknown function %s.%s", mod, name)
		}
		if !slices.Equal(h.ParamTypes(), def.ParamTypes()) || !slices.Equal(h.ResultTypes(), def.ResultTypes()) {
			return fmt.Errorf("imports %s.%s with the wrong signature", mod, name)
		}
	}
	if len(cm.ImportedMemories()) != 0 {
		return errors.New("imports a memory")
	}
	return nil
}

func checkType(a runtime.Artifact) error {
	if a.Type != "" && a.Type != runtime.TypeWasm {
		return errdefs.InvalidArtifact.New("wasm: artifact type %q is not %q", a.Type, runtime.TypeWasm)
	}
	if a.Location == "" {
		return errdefs.InvalidArtifact.New("wasm: artifact has no location")
	}
	return nil
}

// limitPages converts a memory limit in bytes to a page ceiling: 0 when
// there is none (or it is at least the wasm32 maximum), otherwise at least 1.
func limitPages(limit int64) uint32 {
	if limit <= 0 || limit/pageSize >= maxPages {
		return 0
	}
	return uint32(max(limit/pageSize, 1))
}

func programName(a runtime.Artifact) string {
	return strings.TrimSuffix(filepath.Base(a.Location), ".wasm")
}

// sleeper returns the guest's sleep. Unlike wazero's own (time.Sleep) it
// stops when ctx ends, and then ends the guest right there, the way
// proc_exit does, with the exit code wazero uses for a closed context.
func sleeper(ctx context.Context) sys.Nanosleep {
	return func(ns int64) {
		if ns > 0 {
			t := time.NewTimer(time.Duration(ns))
			defer t.Stop()
			select {
			case <-t.C:
				return
			case <-ctx.Done():
			}
		}
		if err := ctx.Err(); err != nil {
			code := sys.ExitCodeContextCanceled
			if errors.Is(err, context.DeadlineExceeded) {
				code = sys.ExitCodeDeadlineExceeded
			}
			// Recovered by wazero, which returns it from the call.
			panic(sys.NewExitError(code))
		}
	}
}

// stdinFor returns the guest's standard input. An in-memory reader is used
// as is; any other reader is read by a goroutine through a pipe that is cut
// when ctx ends, so that a guest blocked reading input stops. stop must be
// called when the run is over.
func stdinFor(ctx context.Context, in io.Reader) (r io.Reader, stop func()) {
	switch in.(type) {
	case nil:
		return bytes.NewReader(nil), func() {}
	case *bytes.Reader, *strings.Reader, *bytes.Buffer:
		return in, func() {}
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := io.Copy(pw, in)
		pw.CloseWithError(err) // nil: EOF
	}()
	cut := context.AfterFunc(ctx, func() { pr.CloseWithError(ctx.Err()) })
	return pr, func() {
		cut()
		// Unblocks the copier's Write; it exits once in.Read returns.
		_ = pr.Close()
	}
}
