package process

// One Run, phase by phase: prepare (cgroup, command, pipes), start (the
// child, under its limits, with its stop armed), stream (output and input
// copied), wait (the child's exit, its group killed, its output drained)
// and collect (the result). Runtime.Run calls them in this order.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/runtime"
)

// run is one invocation of the process runtime, from its cgroup to its
// result.
type run struct {
	r     *Runtime
	inv   *runtime.Invocation
	begin time.Time

	// Set by prepare. cg is nil for a run without a cgroup of its own.
	cg    *runCgroup
	cmd   *exec.Cmd
	pipes *pipes
	// jail is the run's sandbox; nil when it is off.
	jail *jail

	// Set by start.
	startup time.Duration
	pid     int
	log     *slog.Logger
	stop    *groupStop
	// memCgroup: the run's memory is limited and measured by its cgroup;
	// otherwise peak samples the child's RSS.
	memCgroup      bool
	memLimitFailed bool
	peak           *peakSampler

	// Set by stream; outErr and errErr are read once readersDone is
	// closed.
	readersDone    chan struct{}
	outErr, errErr error
	stdinDone      chan struct{}

	// Set by wait.
	waitErr error

	// sharedMax0 is the shared pids cgroup's count of refused forks when
	// the run started; -1 when the run is not in it.
	sharedMax0 int64
}

// prepare checks the artifact and sets up what the child needs before it
// exists: its cgroup with its limits, its command and its pipes, with its
// input unless it is started ahead of it (a spare: see spares.go).
func (x *run) prepare(ctx context.Context, ahead bool) error {
	if err := checkExecutable(x.inv.Artifact.Location); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctxError(ctx, "process: not started")
	}
	x.cg = x.r.newRunCgroup(x.inv)
	x.cmd = x.r.command(x.inv)
	if x.r.sb != nil {
		j, err := x.r.sb.enter(x.inv, x.cmd)
		if err != nil {
			return err
		}
		x.jail = j
	}
	p, err := openPipes(x.cmd, ahead || x.inv.Input != nil)
	if err != nil {
		return err
	}
	x.pipes = p
	if ahead || x.inv.Input == nil {
		return nil
	}
	if err := p.feed(x.inv.Input); err != nil {
		p.closeAll()
		return err
	}
	return nil
}

// newRunCgroup creates the cgroup of a run, with its limits, before the
// child exists. A run gets one of its own when it has a memory limit, or
// when no fork server gives it the shared pids cgroup (joining a cgroup
// costs milliseconds on cgroup v1). It is nil without one, or when it could
// not be created (logged).
func (r *Runtime) newRunCgroup(inv *runtime.Invocation) *runCgroup {
	if r.cgroups == nil || (inv.MemoryLimitBytes <= 0 && inv.PidsLimit <= 0 && r.sharedCgroup() != "") {
		return nil
	}
	pids := r.pidsLimit
	if inv.PidsLimit > 0 {
		pids = inv.PidsLimit
	}
	cg, err := r.cgroups.create(inv.ExecutionID, pids, inv.MemoryLimitBytes)
	if err != nil {
		r.log.Warn("process: running without a cgroup", "execution_id", inv.ExecutionID, "err", err)
		return nil
	}
	return cg
}

// release removes the run's cgroup, once the result has been read from
// it, and gives back its sandbox slot.
func (x *run) release() {
	x.jail.leave()
	if x.cg == nil {
		return
	}
	if err := x.cg.destroy(); err != nil {
		x.r.log.Warn("process: cgroup left behind", "execution_id", x.inv.ExecutionID, "err", err)
	}
}

// command returns the child's command: the artifact with its arguments and
// environment, in a process group of its own.
func (r *Runtime) command(inv *runtime.Invocation) *exec.Cmd {
	return &exec.Cmd{
		Path: inv.Artifact.Location,
		Args: argv(inv),
		Env:  environ(inv, r.nodeID),
		// Pdeathsig kills the child if the node dies (it fires when the
		// forking OS thread exits, hence the locked thread around Start;
		// Go only ends a thread when a goroutine exits while locked to
		// it). Descendants of the child are found by Reconcile.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
}

// launch starts the child and puts it under its limits. On error nothing
// of the child is left.
func (x *run) launch() error {
	err := x.spawn()
	x.startup = time.Since(x.begin)
	x.pipes.closeChildEnds()
	if err != nil {
		x.pipes.closeOurEnds()
		return startError(x.inv.Artifact.Location, err)
	}
	x.pid = x.cmd.Process.Pid
	x.log = x.r.log.With("execution_id", x.inv.ExecutionID, "pid", x.pid)
	if err := x.limit(); err != nil {
		x.abort()
		return err
	}
	return nil
}

// launchAhead starts the child of a spare for inv, which has no input nor
// streams yet (see spares.go).
func (r *Runtime) launchAhead(inv *runtime.Invocation) (*run, error) {
	x := &run{r: r, inv: inv, begin: time.Now(), sharedMax0: -1}
	if err := x.prepare(context.Background(), true); err != nil {
		x.release()
		return nil, err
	}
	if err := x.launch(); err != nil {
		x.release()
		return nil, err
	}
	return x, nil
}

// arm arms the stop of the child's group for when ctx ends, and starts
// sampling its peak memory where no cgroup measures it.
func (x *run) arm(ctx context.Context) {
	x.stop = armGroupStop(ctx, x.pid, x.cg)
	if !x.memCgroup {
		x.peak = samplePeak(x.pid)
	}
}

// abort kills a started child that is not run (its limits failed, or a
// spare is discarded), reaps its group and closes our ends of its pipes.
func (x *run) abort() {
	killGroup(x.pid)
	if x.cg != nil {
		x.cg.killAll()
	}
	_ = x.cmd.Wait()
	x.pipes.closeOurEnds()
	x.awaitGroupGone()
}

// spawn starts the child: from the fork server, inside the node's shared
// pids cgroup, when the run has no cgroup of its own; else born in the
// run's cgroup. A sandboxed child is started by its launcher.
func (x *run) spawn() error {
	x.sharedMax0 = x.r.sharedPidsMax(x.cg)
	if x.jail != nil {
		return x.jail.start(x)
	}
	switch {
	case x.cg == nil && x.r.forker != nil:
		return x.r.forker.start(x.cmd)
	case x.cg != nil && x.cg.c.v2:
		return x.startInCgroupV2()
	default:
		return x.r.startLocked(x.cmd, x.cg, x.inv.ExecutionID)
	}
}

// limit puts the started child under its limits: in its cgroup (where it
// was not born there: see Run), with the memory limit that thread entry
// leaves unset until the child exists, or, without a memory cgroup, with
// RLIMIT_AS.
func (x *run) limit() error {
	if x.cg != nil {
		if err := x.cg.add(x.pid); err != nil {
			return err
		}
		if x.r.cgroupHook != nil {
			x.r.cgroupHook(slices.Clone(x.cg.dirs))
		}
	}
	if x.jail != nil {
		x.jail.limit(x.pid)
	}
	x.memCgroup = x.cg != nil && x.cg.memory != ""
	if x.memCgroup && x.cg.threadEntry() {
		// If the child already uses more than the limit and the kernel
		// cannot reclaim it, it has hit the limit.
		if err := x.cg.setMemoryLimit(x.inv.MemoryLimitBytes); err != nil {
			x.log.Warn("process: setting the memory limit failed; killing the function", "err", err)
			x.memLimitFailed = true
			killGroup(x.pid)
			x.cg.killAll()
		}
	}
	if x.inv.MemoryLimitBytes <= 0 || x.memCgroup {
		return nil
	}
	lim := uint64(x.inv.MemoryLimitBytes)
	// ESRCH: the child has already exited (and been released); nothing
	// left to limit.
	if err := unix.Prlimit(x.pid, unix.RLIMIT_AS, &unix.Rlimit{Cur: lim, Max: lim}, nil); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("process: setting memory limit: %w: %w", errdefs.ErrInternal, err)
	}
	return nil
}

// stream starts copying the child's output to the invocation's writers,
// and its input, unless it was written whole already, to the child.
func (x *run) stream() {
	x.readersDone = make(chan struct{})
	var left atomic.Int32
	left.Store(2)
	readerDone := func() {
		if left.Add(-1) == 0 {
			close(x.readersDone)
		}
	}
	go func() { defer readerDone(); x.outErr = pump(&x.r.bufs, x.pipes.outR, x.inv.Stdout) }()
	go func() { defer readerDone(); x.errErr = pump(&x.r.bufs, x.pipes.errR, x.inv.Stderr) }()

	x.stdinDone = make(chan struct{})
	if x.pipes.inW == nil {
		close(x.stdinDone)
		return
	}
	go func() {
		defer close(x.stdinDone)
		if err := x.pipes.copyInput(x.inv.Input); err != nil {
			x.log.Warn("process: copying input to stdin", "err", err)
		}
	}()
}

// wait waits for the child to exit, kills what is left of its group,
// reaps it and drains its output. It reports whether the stop armed by
// start fired (ctx ended).
func (x *run) wait() (fired bool) {
	// Not reaped yet, so that its pid (the group id) cannot be reused
	// while the rest of the group is killed.
	waitExitNoReap(x.cmd.Process)
	x.stop.childExited()
	x.peak.stop() // no /proc/<pid> read once pid may be reused
	killGroup(x.pid)
	if x.cg != nil {
		// Also what left the group, so that output closes at once.
		x.cg.killAll()
	}
	fired = x.stop.disarm()
	x.waitErr = x.cmd.Wait()
	x.drain()
	x.awaitGroupGone()
	return fired
}

// awaitGroupGone reaps the run's group and waits, up to the drain
// timeout, until no process of it is left, zombies included: when a run
// ends, what it forked is gone, and a fork bomb that was killed no longer
// fills the pids cgroup the next runs fork in (see orphanReaper). The
// group id cannot be reused while a member holds it.
func (x *run) awaitGroupGone() {
	deadline := time.Now().Add(x.r.drain)
	for delay := 100 * time.Microsecond; !reapGroup(x.pid); delay = min(2*delay, 20*time.Millisecond) {
		if time.Now().After(deadline) {
			x.log.Warn("process: processes of the run's group are not reaped yet", "pgid", x.pid, "waited", x.r.drain)
			return
		}
		time.Sleep(delay)
	}
}

// drain waits, bounded by the drain timeout, for the output to reach EOF
// and for the input copier to finish, so that nothing touches the
// invocation's streams after Run returns.
func (x *run) drain() {
	// Close our end of stdin so that a copier blocked writing (a
	// descendant holds the read end but does not read) returns.
	x.pipes.closeInput()
	timer := time.NewTimer(x.r.drain)
	select {
	case <-x.readersDone:
		timer.Stop()
	case <-timer.C:
		x.log.Warn("process: output still open after the process group was killed; closing it", "drain_timeout", x.r.drain)
		x.pipes.closeOutput()
		<-x.readersDone
	}
	x.pipes.closeOutput()
	// The copier can only be stuck in inv.Input.Read.
	select {
	case <-x.stdinDone:
	case <-time.After(x.r.drain):
		x.log.Warn("process: reading input did not finish; abandoning it")
	}
}

// collect turns how the child ended into Run's result.
func (x *run) collect(ctx context.Context, fired bool) (runtime.Result, error) {
	state := x.cmd.ProcessState
	if state == nil {
		return runtime.Result{}, fmt.Errorf("process: waiting for %q: %w: %w", x.inv.Artifact.Location, errdefs.ErrInternal, x.waitErr)
	}
	res := runtime.Result{ExitCode: exitCode(state), Startup: x.startup, Sandbox: x.features()}
	res.MemoryUsedBytes, res.MemoryLimitHit = x.memory(state)
	res.PidsLimitHit = x.pidsLimitHit()
	ws, _ := state.Sys().(syscall.WaitStatus)
	switch {
	case fired && x.stop.termed.Load():
		// ctx ended and we asked the child to stop: however it exited,
		// it was stopped.
		return res, ctxError(ctx, "process: stopped")
	case fired && !ws.Exited():
		// ctx ended and we killed the child (if the child exited
		// normally in the same instant, it finished first: report its
		// result).
		return res, ctxError(ctx, "process: killed")
	case x.outErr != nil:
		return res, fmt.Errorf("process: writing stdout: %w: %w", errdefs.ErrUnavailable, x.outErr)
	case x.errErr != nil:
		return res, fmt.Errorf("process: writing stderr: %w: %w", errdefs.ErrUnavailable, x.errErr)
	}
	return res, nil
}

// memory returns the run's peak memory and whether it hit its limit: from
// the memory cgroup when the run has one, else the child's peak RSS (see
// Run).
func (x *run) memory(state *os.ProcessState) (peak int64, hit bool) {
	if peak, hit, ok := x.cg.memoryStats(); ok {
		return peak, hit || x.memLimitFailed
	}
	peak = x.peak.max()
	if ru, ok := state.SysUsage().(*syscall.Rusage); ok && ru != nil {
		// Our own peak only grows, so reading it now bounds the floor
		// the child inherited at exec.
		if maxRSS := ru.Maxrss * 1024; maxRSS > x.r.nodePeak(maxRSS) {
			peak = maxRSS
		}
	}
	return peak, false
}

// sharedPidsMax returns how many forks the shared pids cgroup has refused
// so far, or -1 when the run (with a cgroup of its own: cg) is not in it.
func (r *Runtime) sharedPidsMax(cg *runCgroup) int64 {
	dir := r.sharedCgroup()
	if cg != nil || dir == "" {
		return -1
	}
	path := filepath.Join(dir, "pids.events")
	r.events.once.Do(func() { r.events.f, _ = os.Open(path) })
	if f := r.events.f; f != nil {
		var buf [128]byte
		if n, _ := f.ReadAt(buf[:], 0); n > 0 {
			return parseKeyed(buf[:n])["max"]
		}
	}
	return readKeyed(path)["max"]
}

// eventsFile is the shared pids cgroup's pids.events, kept open: read
// twice per run, with one pread instead of an open, a read and a close.
type eventsFile struct {
	once sync.Once
	f    *os.File // nil: could not be opened
}

// close closes the file, if it was opened.
func (e *eventsFile) close() {
	e.once.Do(func() {})
	if e.f != nil {
		_ = e.f.Close()
	}
}

// sharedCgroup is the shared pids cgroup runs are forked in; "" for none.
func (r *Runtime) sharedCgroup() string {
	switch {
	case r.ownCgroups:
		return ""
	case r.sb != nil:
		return r.sb.shared
	case r.forker != nil:
		return r.forker.dir
	}
	return ""
}

// pidsLimitHit reports whether a fork of the run was refused by its pids
// limit: its own cgroup's pids.events counts one, or, in the shared
// cgroup, one more was counted while it ran (by it, or by a run at the
// same time: the shared budget ran out for both).
func (x *run) pidsLimitHit() bool {
	if x.cg != nil {
		return x.cg.pids != "" && readKeyed(filepath.Join(x.cg.pids, "pids.events"))["max"] > 0
	}
	return x.sharedMax0 >= 0 && x.r.sharedPidsMax(nil) > x.sharedMax0
}
