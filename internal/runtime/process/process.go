// Package process implements the process runtime: each invocation runs the
// artifact, a local executable, as a child process with os/exec.
//
// The child gets the invocation's input on standard input, its function name
// as the single argument (unless it is the default entry point) and exactly
// the invocation's environment plus SPEAR_FUNCTION_NAME and
// SPEAR_EXECUTION_ID (and a default PATH when the environment has none).
// Standard output and standard error are read through pipes and streamed to
// the invocation's writers as they are written.
//
// Each child runs in its own process group. The whole group is killed with
// SIGKILL when the context ends, and again once the child itself has exited,
// so that background processes it started do not outlive the invocation.
// When the context ends with a runtime.GracefulStop cause, the group first
// gets SIGTERM and is killed with SIGKILL after the grace period, or as soon
// as the child itself has exited, whichever comes first.
// Descendants that escape the group (setsid, double fork into another group)
// cannot be killed this way; if they keep the output pipes open, Run stops
// waiting for output after Options.DrainTimeout.
//
// Where Linux control groups can be used (cgroup v1 pids and memory
// hierarchies, or the v2 unified hierarchy, writable: the node runs as
// root), each run also gets its own cgroup (see cgroup.go): pids.max bounds
// how many processes it can have (Options.PidsLimit), the memory controller
// enforces Invocation.MemoryLimitBytes and measures the run's exact peak,
// and every process in the cgroup, escaped descendants included, is killed
// when the run ends. Without cgroups everything works as described above,
// with RLIMIT_AS standing in for the memory limit.
package process

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	goruntime "runtime"

	"golang.org/x/sys/unix"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/runtime"
)

// Environment variables the runtime sets for every invocation.
const (
	EnvFunctionName = "SPEAR_FUNCTION_NAME"
	EnvExecutionID  = "SPEAR_EXECUTION_ID"
	// EnvNodeID marks every process a node starts (when Options.NodeID is
	// set), so that Reconcile can find those left by a node that died.
	EnvNodeID = "SPEAR_NODE_ID"
)

// DefaultPath is the PATH given to a function whose environment has none.
const DefaultPath = "/usr/local/bin:/usr/bin:/bin"

// DefaultDrainTimeout is the default for Options.DrainTimeout.
const DefaultDrainTimeout = 2 * time.Second

// memSampleInterval is how often the child's peak RSS is sampled; see
// Run.
const memSampleInterval = 50 * time.Millisecond

// DefaultPidsLimit is the default for Options.PidsLimit.
const DefaultPidsLimit = 512

// readBufSize is the size of the buffer output is read with; each read is
// passed on as one Write.
const readBufSize = 32 << 10

// smallInputMax is the most input written into stdin's pipe before the
// function starts: a pipe always holds at least one page.
const smallInputMax = 4096

// smallInput returns the bytes of an in-memory input that can be written
// at once.
func smallInput(r io.Reader) ([]byte, bool) {
	switch r.(type) {
	case *bytes.Reader, *strings.Reader, *bytes.Buffer:
	default:
		return nil, false
	}
	n := r.(interface{ Len() int }).Len()
	if n > smallInputMax {
		return nil, false
	}
	b := make([]byte, n)
	n, _ = io.ReadFull(r, b)
	return b[:n], true
}

// Options configures a Runtime. The zero value is usable.
type Options struct {
	// Logger receives warnings (output that could not be drained, input
	// that could not be read). Nil discards them.
	Logger *slog.Logger
	// DrainTimeout bounds how long Run waits, after the process group has
	// been killed, for its output pipes to reach EOF (a descendant that
	// escaped the group may hold them open). Zero means DefaultDrainTimeout.
	DrainTimeout time.Duration
	// OwnCgroups gives every run a cgroup of its own (exact accounting;
	// descendants that left the process group are killed with the run),
	// which costs milliseconds per run on cgroup v1. Otherwise only runs
	// with a memory limit get one, and the others start inside the node's
	// shared pids cgroup (see forkServer).
	OwnCgroups bool
	// NodeID, when set, is passed to every function as SPEAR_NODE_ID; see
	// Reconcile. It also names the node's directory of cgroups.
	NodeID string
	// PidsLimit is how many processes (threads included) one run may have
	// at once, enforced with the pids cgroup controller when it is
	// available (a fork bomb is contained). Zero means DefaultPidsLimit; a
	// negative value means no limit.
	PidsLimit int
}

// Runtime runs process artifacts. It is safe for concurrent use.
type Runtime struct {
	log    *slog.Logger
	drain  time.Duration
	nodeID string

	// forker starts runs without a memory limit inside the node's shared
	// pids cgroup; nil when there is none.
	forker    *forkServer
	closeOnce sync.Once
	// cgroups is where runs' cgroups are created; nil when cgroups cannot
	// be used.
	cgroups   *cgroups
	pidsLimit int64
	// cgroupHook, when set (by tests), is called with the directories of
	// a run's cgroup once the child is in it.
	cgroupHook func(dirs []string)

	// The node's own peak RSS, read at most once a second (it only grows).
	peakMu     sync.Mutex
	peak       int64
	peakReadAt time.Time

	// bufs recycles the output readers' buffers (*[]byte).
	bufs sync.Pool
}

// nodePeak returns the node's own peak RSS (VmHWM), refreshed at most once
// a second.
func (r *Runtime) nodePeak() int64 {
	r.peakMu.Lock()
	defer r.peakMu.Unlock()
	if time.Since(r.peakReadAt) > time.Second {
		r.peak, r.peakReadAt = vmHWM(os.Getpid()), time.Now()
	}
	return r.peak
}

// Compile-time checks that Runtime implements the runtime interfaces.
var (
	_ runtime.Runtime   = (*Runtime)(nil)
	_ runtime.Validator = (*Runtime)(nil)
)

// New returns a process runtime.
func New(opts Options) *Runtime {
	r := &Runtime{log: opts.Logger, drain: opts.DrainTimeout, nodeID: opts.NodeID}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.drain <= 0 {
		r.drain = DefaultDrainTimeout
	}
	switch {
	case opts.PidsLimit == 0:
		r.pidsLimit = DefaultPidsLimit
	case opts.PidsLimit > 0:
		r.pidsLimit = int64(opts.PidsLimit)
	}
	cg, why := detectCgroups(opts.NodeID)
	r.cgroups = cg
	if !opts.OwnCgroups {
		if f, err := newForkServer(cg, r.pidsLimit); err != nil {
			r.log.Warn("process: no shared pids cgroup; each run joins its own", "err", err)
		} else {
			r.forker = f
		}
	}
	switch {
	case cg == nil:
		r.log.Debug("process: cgroups not available; runs are not limited in processes, memory is limited with RLIMIT_AS", "reason", why)
	case why != "":
		r.log.Debug("process: some cgroup controllers not available", "pids", cg.pids != "", "memory", cg.memory != "", "reason", why)
	}
	return r
}

// startLocked starts cmd from this goroutine's thread, locked (for the
// parent-death signal), inside the run's cgroup when it has one, so the
// child is born in it.
func (r *Runtime) startLocked(cmd *exec.Cmd, cg *runCgroup, execID string) error {
	goruntime.LockOSThread()
	var leave func() error
	if cg != nil {
		var eerr error
		if leave, _, eerr = cg.enterThread(); eerr != nil {
			r.log.Warn("process: cannot fork from inside the cgroup; moving the child in after it has started", "execution_id", execID, "err", eerr)
		}
	}
	err := cmd.Start()
	stuck := false
	if leave != nil {
		if lerr := leave(); lerr != nil {
			// Keep the thread locked: Go ends it when this goroutine
			// exits, instead of running other goroutines in the cgroup.
			stuck = true
			r.log.Error("process: a node thread could not leave a run's cgroup; it will be retired", "execution_id", execID, "err", lerr)
		}
	}
	if !stuck {
		goruntime.UnlockOSThread()
	}
	return err
}

// Close stops the fork server and removes the node's shared cgroup. Runs
// must have ended.
func (r *Runtime) Close(context.Context) error {
	r.closeOnce.Do(func() {
		if r.forker != nil {
			r.forker.stop()
		}
	})
	return nil
}

// Type returns runtime.TypeProcess.
func (r *Runtime) Type() runtime.Type { return runtime.TypeProcess }

// Validate checks that a.Location is an existing, regular, executable file.
// Errors wrap errdefs.ErrFailedPrecondition.
func (r *Runtime) Validate(ctx context.Context, a runtime.Artifact) error {
	return checkExecutable(a.Location)
}

func checkExecutable(path string) error {
	if path == "" {
		return fmt.Errorf("process: artifact has no location: %w", errdefs.ErrFailedPrecondition)
	}
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("process: artifact %q does not exist: %w", path, errdefs.ErrFailedPrecondition)
		}
		return fmt.Errorf("process: artifact %q: %w: %w", path, errdefs.ErrFailedPrecondition, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("process: artifact %q is not a regular file (mode %v): %w", path, fi.Mode().Type(), errdefs.ErrFailedPrecondition)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return errdefs.ArtifactNotExecutable.New("process: artifact %q is not executable (mode %v): chmod +x it, or register a script through an interpreter", path, fi.Mode().Perm())
	}
	return nil
}

// Run runs inv.Artifact.Location to completion; see runtime.Runtime.
//
// When ctx ends, the child's process group is killed at once, unless the
// cause is a runtime.GracefulStop: then the group gets SIGTERM, and SIGKILL
// once the child has exited or the grace has passed. Either way Run returns
// an error wrapping ctx.Err(), even when the child exited with status 0
// after SIGTERM.
//
// With a memory cgroup, Result.MemoryUsedBytes is the cgroup's peak usage
// (memory.max_usage_in_bytes, or memory.peak with v2): the exact peak of the
// child and all its descendants, page cache they caused included, and
// Result.MemoryLimitHit reports that the cgroup reached its limit
// (memory.failcnt > 0, or an OOM kill).
//
// Without a memory cgroup, Result.MemoryUsedBytes is the child's peak RSS
// and MemoryLimitHit is never set. The peak comes from rusage
// (ru_maxrss) when that can be trusted. On Linux ru_maxrss is never lower
// than the peak RSS of the process that spawned the child (the kernel folds
// the high-water mark of the address space the child leaves at exec into it,
// and os/exec spawns with vfork semantics), so a ru_maxrss not above this
// process's own peak only says "at most the node's peak". In that case the
// value is the peak of the child's VmHWM sampled every 50 ms while it runs
// (0 if it exited before the first sample), which can miss a final spike.
//
// With cgroups, the run's cgroup is created, with its pids limit, before the
// child starts. With v1 the child is born in it: the thread that forks it
// (locked to this goroutine) enters the cgroup for the fork and leaves it
// right after (see enterThread), and the memory limit is set then. Otherwise
// (v2, or the node's own cgroup unknown) the child is moved in right after
// it has started, os/exec offering no hook between fork and exec: in the few
// microseconds between its exec and that move, the child is limited only by
// its process group, a process it forks in that window is outside the
// cgroup (still killed with the group), and memory it touches is charged to
// the node's cgroup.
//
// When inv.MemoryLimitBytes > 0 and there is no memory cgroup, the child's
// RLIMIT_AS is set with prlimit right after it has started instead, with the
// same window. RLIMIT_AS bounds address space, not memory: it is only the
// fallback, since it refuses allocations that a memory cgroup would allow
// (runtimes that reserve large address ranges).
func (r *Runtime) Run(ctx context.Context, inv *runtime.Invocation) (runtime.Result, error) {
	begin := time.Now()
	if err := checkExecutable(inv.Artifact.Location); err != nil {
		return runtime.Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return runtime.Result{}, ctxError(ctx, "process: not started")
	}

	// The run's cgroup, with its limits, before the child exists. It is
	// removed when Run returns, after the result has been read from it.
	var cg *runCgroup
	// A cgroup of its own for a run with a memory limit (or where no fork
	// server gives the shared pids cgroup): joining one costs milliseconds
	// on cgroup v1.
	if r.cgroups != nil && (inv.MemoryLimitBytes > 0 || r.forker == nil) {
		var err error
		cg, err = r.cgroups.create(inv.ExecutionID, r.pidsLimit, inv.MemoryLimitBytes)
		if err != nil {
			r.log.Warn("process: running without a cgroup", "execution_id", inv.ExecutionID, "err", err)
			cg = nil
		}
	}
	if cg != nil {
		defer func() {
			if err := cg.destroy(); err != nil {
				r.log.Warn("process: cgroup left behind", "execution_id", inv.ExecutionID, "err", err)
			}
		}()
	}

	cmd := &exec.Cmd{
		Path: inv.Artifact.Location,
		Args: argv(inv),
		Env:  environ(inv, r.nodeID),
		// Pdeathsig kills the child if the node dies (it fires when the
		// forking OS thread exits, hence the locked thread around Start;
		// Go only ends a thread when a goroutine exits while locked to
		// it). Descendants of the child are found by Reconcile.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}

	// Pipes. The child's ends are closed in this process right after Start;
	// ours are closed by the copiers or after draining.
	var childEnds, ourEnds []*os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			_ = f.Close()
		}
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return runtime.Result{}, fmt.Errorf("process: stdout pipe: %w: %w", errdefs.ErrInternal, err)
	}
	childEnds, ourEnds = append(childEnds, outW), append(ourEnds, outR)
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll(childEnds)
		closeAll(ourEnds)
		return runtime.Result{}, fmt.Errorf("process: stderr pipe: %w: %w", errdefs.ErrInternal, err)
	}
	childEnds, ourEnds = append(childEnds, errW), append(ourEnds, errR)
	var inW *os.File
	if inv.Input != nil {
		var inR *os.File
		inR, inW, err = os.Pipe()
		if err != nil {
			closeAll(childEnds)
			closeAll(ourEnds)
			return runtime.Result{}, fmt.Errorf("process: stdin pipe: %w: %w", errdefs.ErrInternal, err)
		}
		childEnds = append(childEnds, inR)
		cmd.Stdin = inR
		// Input that fits in an empty pipe is written now, whole, and the
		// pipe closed: no copier goroutine for the usual small input.
		if b, ok := smallInput(inv.Input); ok {
			_, werr := inW.Write(b)
			_ = inW.Close()
			inW = nil
			if werr != nil {
				closeAll(childEnds)
				closeAll(ourEnds)
				return runtime.Result{}, fmt.Errorf("process: writing stdin: %w: %w", errdefs.ErrInternal, werr)
			}
		} else {
			ourEnds = append(ourEnds, inW)
		}
	} // else: os/exec connects stdin to /dev/null.
	cmd.Stdout, cmd.Stderr = outW, errW

	if cg == nil && r.forker != nil {
		err = r.forker.start(cmd)
	} else {
		err = r.startLocked(cmd, cg, inv.ExecutionID)
	}
	startup := time.Since(begin)
	if err != nil {
		closeAll(childEnds)
		closeAll(ourEnds)
		return runtime.Result{}, startError(inv.Artifact.Location, err)
	}
	closeAll(childEnds)
	pid := cmd.Process.Pid
	log := r.log.With("execution_id", inv.ExecutionID, "pid", pid)

	// Stop the whole group as soon as ctx ends: at once, or, for a
	// graceful stop, SIGTERM and then SIGKILL after the grace or once the
	// child has exited (mainDone), whichever comes first. stopKillAndWait
	// reports whether that happened, and returns only once the kill is
	// done, so that no signal can reach the group id after the child has
	// been reaped. termed records that SIGTERM was sent.
	killed := make(chan struct{})
	mainDone := make(chan struct{})
	var termed atomic.Bool
	stopKill := context.AfterFunc(ctx, func() {
		defer close(killed)
		if grace := runtime.StopGrace(ctx); grace > 0 {
			select {
			case <-mainDone:
				// Already exited (or being killed): nothing to ask.
			default:
				termed.Store(true)
				signalGroup(pid, unix.SIGTERM)
				t := time.NewTimer(grace)
				select {
				case <-mainDone:
				case <-t.C:
				}
				t.Stop()
			}
		}
		killGroup(pid)
		if cg != nil {
			cg.killAll()
		}
	})
	stopKillAndWait := func() (fired bool) {
		if stopKill() {
			return false
		}
		<-killed
		return true
	}

	if cg != nil {
		// See the doc comment for the window before this.
		if err := cg.add(pid); err != nil {
			killGroup(pid)
			close(mainDone)
			stopKillAndWait()
			_ = cmd.Wait()
			closeAll(ourEnds)
			return runtime.Result{}, err
		}
		if r.cgroupHook != nil {
			r.cgroupHook(slices.Clone(cg.dirs))
		}
	}
	memCgroup := cg != nil && cg.memory != ""
	memLimitFailed := false
	if memCgroup && cg.threadEntry() {
		// Not set before: see enterThread. If the child already uses
		// more than the limit and the kernel cannot reclaim it, it has
		// hit the limit.
		if err := cg.setMemoryLimit(inv.MemoryLimitBytes); err != nil {
			log.Warn("process: setting the memory limit failed; killing the function", "err", err)
			memLimitFailed = true
			killGroup(pid)
			cg.killAll()
		}
	}

	if inv.MemoryLimitBytes > 0 && !memCgroup {
		lim := uint64(inv.MemoryLimitBytes)
		// ESRCH: the child has already exited (and been released); nothing
		// left to limit.
		if err := unix.Prlimit(pid, unix.RLIMIT_AS, &unix.Rlimit{Cur: lim, Max: lim}, nil); err != nil && !errors.Is(err, unix.ESRCH) {
			killGroup(pid)
			close(mainDone)
			stopKillAndWait()
			_ = cmd.Wait()
			closeAll(ourEnds)
			return runtime.Result{}, fmt.Errorf("process: setting memory limit: %w: %w", errdefs.ErrInternal, err)
		}
	}

	// Without a memory cgroup, sample the child's own peak RSS (see the
	// Run doc comment), from the first interval on: most functions end
	// before it and cost nothing.
	var sampledPeak atomic.Int64
	var samplerMu sync.Mutex // held while sampling, so stopping waits for it
	samplerStopped := false
	var sampler *time.Timer
	if !memCgroup {
		samplerMu.Lock()
		sampler = time.AfterFunc(memSampleInterval, func() {
			samplerMu.Lock()
			defer samplerMu.Unlock()
			if samplerStopped {
				return
			}
			if v := vmHWM(pid); v > sampledPeak.Load() {
				sampledPeak.Store(v)
			}
			sampler.Reset(memSampleInterval)
		})
		samplerMu.Unlock()
	}
	stopSampling := func() {
		samplerMu.Lock()
		samplerStopped = true
		if sampler != nil {
			sampler.Stop()
		}
		samplerMu.Unlock()
	}

	// Output readers.
	var outErr, errErr error
	readersDone := make(chan struct{})
	var readersLeft atomic.Int32
	readersLeft.Store(2)
	readerDone := func() {
		if readersLeft.Add(-1) == 0 {
			close(readersDone)
		}
	}
	go func() { defer readerDone(); outErr = pump(&r.bufs, outR, inv.Stdout) }()
	go func() { defer readerDone(); errErr = pump(&r.bufs, errR, inv.Stderr) }()

	// Input copier.
	stdinDone := make(chan struct{})
	if inW != nil {
		go func() {
			defer close(stdinDone)
			if _, err := io.Copy(inW, inv.Input); err != nil && !ignorableStdinError(err) {
				log.Warn("process: copying input to stdin", "err", err)
			}
			_ = inW.Close()
		}()
	} else {
		close(stdinDone)
	}

	// Wait for the child to exit without reaping it, so that its pid (the
	// group id) cannot be reused while we kill the rest of the group.
	waitExitNoReap(cmd.Process)
	close(mainDone)
	stopSampling() // no /proc/<pid> read once pid may be reused
	killGroup(pid)
	if cg != nil {
		// Also what left the group, so that output closes at once.
		cg.killAll()
	}
	fired := stopKillAndWait()
	waitErr := cmd.Wait()

	// The child is gone. Close our end of stdin so a copier blocked writing
	// (a descendant holds the read end but does not read) returns; then wait
	// for output to drain, bounded.
	if inW != nil {
		_ = inW.Close()
	}
	timer := time.NewTimer(r.drain)
	select {
	case <-readersDone:
		timer.Stop()
	case <-timer.C:
		log.Warn("process: output still open after the process group was killed; closing it", "drain_timeout", r.drain)
		_ = outR.Close()
		_ = errR.Close()
		<-readersDone
	}
	_ = outR.Close()
	_ = errR.Close()
	// Do not touch inv.Input after returning: wait for the copier, bounded
	// (it can only be stuck in inv.Input.Read).
	select {
	case <-stdinDone:
	case <-time.After(r.drain):
		log.Warn("process: reading input did not finish; abandoning it")
	}

	state := cmd.ProcessState
	if state == nil {
		return runtime.Result{}, fmt.Errorf("process: waiting for %q: %w: %w", inv.Artifact.Location, errdefs.ErrInternal, waitErr)
	}
	res := runtime.Result{ExitCode: exitCode(state), Startup: startup}
	if peak, hit, ok := cg.memoryStats(); ok {
		res.MemoryUsedBytes, res.MemoryLimitHit = peak, hit || memLimitFailed
	} else {
		res.MemoryUsedBytes = sampledPeak.Load()
		if ru, ok := state.SysUsage().(*syscall.Rusage); ok && ru != nil {
			// Our own peak only grows, so reading it now bounds the
			// floor the child inherited at exec.
			if maxRSS := ru.Maxrss * 1024; maxRSS > r.nodePeak() {
				res.MemoryUsedBytes = maxRSS
			}
		}
	}
	ws, _ := state.Sys().(syscall.WaitStatus)
	if fired && termed.Load() {
		// ctx ended and we asked the child to stop: however it exited, it
		// was stopped.
		return res, ctxError(ctx, "process: stopped")
	}
	if fired && !ws.Exited() {
		// ctx ended and we killed the child (if the child exited normally
		// in the same instant, it finished first: report its result).
		return res, ctxError(ctx, "process: killed")
	}
	if outErr != nil {
		return res, fmt.Errorf("process: writing stdout: %w: %w", errdefs.ErrUnavailable, outErr)
	}
	if errErr != nil {
		return res, fmt.Errorf("process: writing stderr: %w: %w", errdefs.ErrUnavailable, errErr)
	}
	return res, nil
}

// argv returns the child's arguments: the program, then the function name
// unless it selects the default entry point.
func argv(inv *runtime.Invocation) []string {
	args := []string{inv.Artifact.Location}
	if inv.Function != "" && inv.Function != runtime.DefaultFunction {
		args = append(args, inv.Function)
	}
	return args
}

// environ returns exactly inv.Env (sorted) plus the SPEAR_* variables, and
// PATH=DefaultPath when inv.Env has no PATH. SPEAR_FUNCTION_NAME is
// runtime.DefaultFunction when inv.Function is "".
func environ(inv *runtime.Invocation, nodeID string) []string {
	fn := inv.Function
	if fn == "" {
		fn = runtime.DefaultFunction
	}
	env := make([]string, 0, len(inv.Env)+3)
	for k, v := range inv.Env {
		if k == EnvFunctionName || k == EnvExecutionID || k == EnvNodeID {
			continue
		}
		env = append(env, k+"="+v)
	}
	if _, ok := inv.Env["PATH"]; !ok {
		env = append(env, "PATH="+DefaultPath)
	}
	env = append(env, EnvFunctionName+"="+fn, EnvExecutionID+"="+inv.ExecutionID)
	if nodeID != "" {
		env = append(env, EnvNodeID+"="+nodeID)
	}
	sort.Strings(env)
	return env
}

// pump copies r to w, one Write per read, until EOF or until r is closed.
// After a Write fails it keeps reading (so the child never blocks on a full
// pipe) but discards, and returns the first write error.
func pump(bufs *sync.Pool, r *os.File, w io.Writer) error {
	bp, _ := bufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, readBufSize)
		bp = &b
	}
	defer bufs.Put(bp)
	buf := *bp
	var werr error
	for {
		n, err := r.Read(buf)
		if n > 0 && werr == nil {
			if _, e := w.Write(buf[:n]); e != nil {
				werr = e
			}
		}
		if err != nil {
			// io.EOF, or os.ErrClosed after a drain timeout.
			return werr
		}
	}
}

// waitExitNoReap blocks until process p has exited, leaving it a zombie.
// It waits in Go's poller on a pidfd (readable once the process exits), so
// no thread is held in a blocking waitid for the life of the function;
// without pidfds it falls back to that.
func waitExitNoReap(p *os.Process) {
	if fd, err := unix.PidfdOpen(p.Pid, unix.PIDFD_NONBLOCK); err == nil {
		f := os.NewFile(uintptr(fd), "pidfd")
		defer func() { _ = f.Close() }()
		if rc, err := f.SyscallConn(); err == nil {
			if err := rc.Read(func(fd uintptr) bool {
				var info unix.Siginfo
				err := unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOWAIT|unix.WNOHANG, nil)
				// Not exited yet: WNOHANG leaves info zeroed (no SIGCHLD
				// signo); wait for readability. EINTR: try again.
				return !(err == nil && info.Signo == 0) && !errors.Is(err, unix.EINTR) && !errors.Is(err, unix.EAGAIN)
			}); err == nil {
				return // exited, or an error cmd.Wait (which follows) reports
			}
		}
	}
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, p.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			// On any other error cmd.Wait (which follows) reports it.
			return
		}
	}
}

// vmHWM returns the peak RSS (VmHWM) of process pid in bytes, or 0 if it
// cannot be read (the process has exited).
func vmHWM(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	_, rest, ok := bytes.Cut(b, []byte("\nVmHWM:"))
	if !ok {
		return 0
	}
	line, _, _ := bytes.Cut(rest, []byte("\n"))
	kb, err := strconv.ParseInt(string(bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(line), []byte("kB")))), 10, 64)
	if err != nil {
		return 0
	}
	return kb * 1024
}

// killGroup sends SIGKILL to process group pgid.
func killGroup(pgid int) {
	signalGroup(pgid, unix.SIGKILL)
}

// signalGroup sends sig to process group pgid.
func signalGroup(pgid int, sig unix.Signal) {
	_ = unix.Kill(-pgid, sig)
}

// exitCode is the exit status, or 128+signal for a child killed by a
// signal.
func exitCode(state *os.ProcessState) int {
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return state.ExitCode()
}

// ignorableStdinError reports whether err, from copying input to the child,
// only means the child did not read all of it (exited, closed stdin).
func ignorableStdinError(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, os.ErrClosed)
}

// ctxError is the error returned when ctx ended: it wraps ctx.Err() and, when
// it says more, context.Cause(ctx).
func ctxError(ctx context.Context, msg string) error {
	err, cause := ctx.Err(), context.Cause(ctx)
	if cause != nil && cause != err {
		return fmt.Errorf("%s: %w (cause: %w)", msg, err, cause)
	}
	return fmt.Errorf("%s: %w", msg, err)
}

// startError classifies an error from starting the child.
func startError(path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.ENOEXEC) {
		return fmt.Errorf("process: cannot execute %q: %w: %w", path, errdefs.ErrFailedPrecondition, err)
	}
	return fmt.Errorf("process: starting %q: %w: %w", path, errdefs.ErrInternal, err)
}

// Reconcile kills every process group left behind by an earlier run of this
// node (a node killed with SIGKILL cannot stop its functions): processes
// whose environment carries SPEAR_NODE_ID=<this node> and a
// SPEAR_EXECUTION_ID. It then kills those processes left in the run
// cgroups of this node (spear/<node-id>) and removes the cgroups that end
// up empty. It never kills the node itself, its ancestors or a process
// without that marker (see killGuard). Call it at start-up, before any
// function runs, holding the data dir (so no other live node has this
// node's id). It returns how many processes it found.
func (r *Runtime) Reconcile(ctx context.Context) (int, error) {
	if r.nodeID == "" {
		return 0, nil
	}
	guard := newKillGuard(r.nodeID)
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("process: reconcile: %w", err)
	}
	found := map[int]bool{}
	for _, e := range ents {
		if ctx.Err() != nil {
			return len(found), ctx.Err()
		}
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !guard.mayKill(pid) {
			continue
		}
		found[pid] = true
		if pgid, err := syscall.Getpgid(pid); err == nil && guard.mayKillGroup(pgid) {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
		r.log.Info("killed a process left by an earlier run of this node", "pid", pid)
	}
	if r.cgroups != nil {
		killed, removed, err := r.cgroups.reconcile(guard, found)
		for _, pid := range killed {
			r.log.Info("killed a process left in a cgroup by an earlier run of this node", "pid", pid)
		}
		if removed > 0 {
			r.log.Info("removed cgroups left by an earlier run of this node", "count", removed)
		}
		if err != nil {
			return len(found), fmt.Errorf("process: reconcile: removing cgroups: %w", err)
		}
	}
	return len(found), nil
}
