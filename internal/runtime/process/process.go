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
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/sandbox"
)

// Environment variables the runtime sets for every invocation.
const (
	EnvFunctionName = "SPEAR_FUNCTION_NAME"
	EnvExecutionID  = "SPEAR_EXECUTION_ID"
	// EnvNodeID marks every process a node starts (when Options.NodeID is
	// set), so that Reconcile can find those left by a node that died.
	EnvNodeID = "SPEAR_NODE_ID"
	// EnvAttempt is the run's attempt number (runtime.Invocation.Attempt).
	EnvAttempt = "SPEAR_ATTEMPT"
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
	// Sandbox is sandbox.ModeAuto to sandbox every run as far as the host
	// allows (see sandbox.go and docs/SECURITY.md); "" or sandbox.ModeOff
	// runs functions with only their process group and scrubbed
	// environment.
	Sandbox sandbox.Mode
	// WorkRoot is where sandboxed runs get their work dirs (cleared at
	// start); "", or a directory slot uids cannot reach, means a
	// temporary directory.
	WorkRoot string
	// ReadRoots are the trees sandboxed functions may read and execute
	// besides sandbox.SystemDirs: the node's artifact roots. A task's
	// artifact must lie in one of them (or in a system dir).
	ReadRoots []string
	// UIDBase is the first uid of the sandbox's slots; 0 means
	// sandbox.DefaultUIDBase(NodeID).
	UIDBase int
	// IDs makes the execution ids spares (see spares.go) are started as:
	// the node's, which its executions' ids come from too. Nil means no
	// spares.
	IDs IDSource
	// Spares is how many spares the node holds at most. Zero means
	// DefaultSpares; a negative value means none.
	Spares int
}

// Runtime runs process artifacts. It is safe for concurrent use.
type Runtime struct {
	log    *slog.Logger
	drain  time.Duration
	nodeID string

	// forker starts runs without a memory limit inside the node's shared
	// pids cgroup; nil when there is none.
	forker    *forkServer
	reaper    *orphanReaper // nil: init reaps what runs leave
	closeOnce sync.Once
	// cgroups is where runs' cgroups are created; nil when cgroups cannot
	// be used.
	cgroups   *cgroups
	pidsLimit int64
	// sb is the sandbox; nil when it is off.
	sb         *sandboxed
	ownCgroups bool
	// cgroupHook, when set (by tests), is called with the directories of
	// a run's cgroup once the child is in it.
	cgroupHook func(dirs []string)

	// The node's own peak RSS, read at most once a second (it only grows).
	peakMu     sync.Mutex
	peak       int64
	peakReadAt time.Time

	// bufs recycles the output readers' buffers (*[]byte).
	bufs sync.Pool
	// events reads the shared pids cgroup's refused forks.
	events eventsFile

	// spares are children started ahead of their invocations; nil for
	// none. running counts the runs under way.
	spares  *spares
	running atomic.Int32
}

// Compile-time checks that Runtime implements the runtime interfaces.
var (
	_ runtime.Runtime            = (*Runtime)(nil)
	_ runtime.CapabilityReporter = (*Runtime)(nil)
	_ runtime.Validator          = (*Runtime)(nil)
	_ runtime.Reconciler         = (*Runtime)(nil)
	_ runtime.Closer             = (*Runtime)(nil)
	_ runtime.Prestarter         = (*Runtime)(nil)
	_ runtime.Forgetter          = (*Runtime)(nil)
)

// New returns a process runtime. When the sandbox is asked for and cannot
// be set up at all, it logs why, runs without it and reports it off.
func New(opts Options) *Runtime {
	r := &Runtime{log: opts.Logger, drain: opts.DrainTimeout, nodeID: opts.NodeID, ownCgroups: opts.OwnCgroups}
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
	if o, err := newOrphanReaper(); err != nil {
		r.log.Warn("process: the node cannot reap what runs leave behind; init will", "err", err)
	} else {
		r.reaper = o
	}
	cg, why := detectCgroups(opts.NodeID)
	r.cgroups = cg
	if opts.Sandbox == sandbox.ModeAuto {
		sb, err := newSandboxed(sandboxSetup{opts: opts, cg: cg, cgroupsWhy: why, pidsLimit: r.pidsLimit, log: r.log})
		if err != nil {
			r.log.Error("process: the sandbox cannot be set up; functions run without it", "err", err)
		}
		r.sb = sb
	}
	if r.sb == nil && !opts.OwnCgroups {
		r.forker = r.newPlainForkServer()
	}
	spares := opts.Spares
	if spares == 0 {
		spares = DefaultSpares
	}
	r.spares = newSpares(r, spares, opts.IDs)
	switch {
	case cg == nil:
		r.log.Debug("process: cgroups not available; runs are not limited in processes, memory is limited with RLIMIT_AS", "reason", why)
	case why != "":
		r.log.Debug("process: some cgroup controllers not available", "pids", cg.pids != "", "memory", cg.memory != "", "reason", why)
	}
	return r
}

// newPlainForkServer starts the fork server of runs without a sandbox, in
// the shared pids cgroup; nil without one.
func (r *Runtime) newPlainForkServer() *forkServer {
	dir, err := newSharedCgroup(r.cgroups, r.pidsLimit)
	if err == nil && dir != "" {
		var f *forkServer
		if f, err = newForkServer(r.log, dir, nil); err == nil {
			return f
		}
	}
	if err != nil {
		r.log.Warn("process: no shared pids cgroup; each run joins its own", "err", err)
	}
	return nil
}

// Close kills the spares, stops the fork server and the reaper's sweep,
// and removes the node's shared cgroup. Runs must have ended.
func (r *Runtime) Close(context.Context) error {
	r.closeOnce.Do(func() {
		r.spares.close()
		r.events.close()
		if r.forker != nil {
			r.forker.stop()
			removeSharedCgroup(r.forker.dir)
		}
		if r.sb != nil {
			r.sb.close()
		}
		if r.reaper != nil {
			r.reaper.stop()
		}
	})
	return nil
}

// Type returns runtime.TypeProcess.
func (r *Runtime) Type() runtime.Type { return runtime.TypeProcess }

// Capabilities implements runtime.CapabilityReporter. The memory limit
// counts as a capability only with a memory cgroup: RLIMIT_AS, the
// fallback, refuses allocations but cannot tell that it did.
func (r *Runtime) Capabilities() runtime.Capabilities {
	return runtime.Capabilities{
		GracefulStop: true,
		MemoryLimit:  r.cgroups != nil && r.cgroups.memory != "",
		MemoryPeak:   true,
	}
}

// Validate checks that a.Location is an existing, regular, executable file
// that this node can execute (see inspectArtifact). Errors carry a code of
// class errdefs.ErrFailedPrecondition.
func (r *Runtime) Validate(ctx context.Context, a runtime.Artifact) error {
	if err := checkExecutable(a.Location); err != nil {
		return err
	}
	if err := checkPrestart(a); err != nil {
		return err
	}
	return inspectArtifact(a.Location, binfmtDir)
}

// Forget implements runtime.Forgetter: the spares of a's task (of the
// version a.Digest names, or of every version) are killed.
func (r *Runtime) Forget(_ context.Context, a runtime.Artifact) {
	r.spares.forget(a.TaskID, a.Digest)
}

// checkExecutable checks, with one stat, that path is a regular file with
// execute permission.
func checkExecutable(path string) error {
	if path == "" {
		return errdefs.ArtifactNotFound.New("process: artifact has no location")
	}
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return errdefs.ArtifactNotFound.New("process: artifact %q does not exist", path)
		}
		return errdefs.ArtifactUnreadable.New("process: artifact %q: %v", path, err)
	}
	if fi.IsDir() {
		return errdefs.ArtifactNotAFile.New("process: artifact %q is a directory: name the executable file in it", path)
	}
	if !fi.Mode().IsRegular() {
		return errdefs.ArtifactNotAFile.New("process: artifact %q is not a regular file (mode %v)", path, fi.Mode().Type())
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
// child starts, and the child is born in it. With v1 the thread that forks
// it (locked to this goroutine) enters the cgroup for the fork and leaves it
// right after (see enterThread), and the memory limit is set then. With v2
// the child is cloned straight into the cgroup (see startInCgroupV2). Where
// neither works (v1 with the node's own cgroup unknown, a kernel older than
// 5.7) the child is moved in right after it has started, os/exec offering no
// hook between fork and exec: in the few microseconds between its exec and
// that move, the child is limited only by its process group, a process it
// forks in that window is outside the cgroup (still killed with the group),
// and memory it touches is charged to the node's cgroup.
//
// When inv.MemoryLimitBytes > 0 and there is no memory cgroup, the child's
// RLIMIT_AS is set with prlimit right after it has started instead, with the
// same window. RLIMIT_AS bounds address space, not memory: it is only the
// fallback, since it refuses allocations that a memory cgroup would allow
// (runtimes that reserve large address ranges).
func (r *Runtime) Run(ctx context.Context, inv *runtime.Invocation) (runtime.Result, error) {
	r.running.Add(1)
	defer r.running.Add(-1)
	x := r.spares.take(ctx, inv)
	if x == nil {
		x = &run{r: r, inv: inv, begin: time.Now(), sharedMax0: -1}
		if err := x.start(ctx); err != nil {
			x.release()
			return runtime.Result{}, err
		}
	}
	defer x.release()
	x.arm(ctx)
	x.stream()
	fired := x.wait()
	return x.collect(ctx, fired)
}

// start prepares and launches the child of a run, with its input.
func (x *run) start(ctx context.Context) error {
	if err := x.prepare(ctx, false); err != nil {
		return err
	}
	return x.launch()
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
		if k == EnvFunctionName || k == EnvExecutionID || k == EnvNodeID || k == EnvAttempt {
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
	if inv.Attempt > 0 {
		env = append(env, EnvAttempt+"="+strconv.Itoa(int(inv.Attempt)))
	}
	sort.Strings(env)
	return env
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

// startError classifies an error from starting the child: a failed exec
// of the artifact (see execError) or an internal error.
func startError(path string, err error) error {
	if e := execError(path, err); e != nil {
		return e
	}
	return fmt.Errorf("process: starting %q: %w: %w", path, errdefs.ErrInternal, err)
}
