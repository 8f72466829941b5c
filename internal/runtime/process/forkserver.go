package process

import (
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spear-go/spear/internal/sandbox"
)

// forkServer starts the processes of runs from one OS thread that lives as
// long as the node, which makes the children's parent-death signal fire
// exactly when the node dies. The thread may live in a shared pids cgroup
// of the node: children are born inside it (cgroup membership is inherited
// at fork), so a fork bomb is bounded by the shared pids.max at no cost per
// run — joining a cgroup costs milliseconds on cgroup v1, forking inside
// one costs nothing. With the sandbox on, the thread also carries the
// per-thread confinement every child inherits (see sandbox.ThreadPolicy).
type forkServer struct {
	log  *slog.Logger
	reqs chan forkRequest
	// dir is the shared cgroup the thread is in; "" for none.
	dir string
	// features are the sandbox features the thread took on.
	features []string
}

type forkRequest struct {
	cmd *exec.Cmd
	// cg, when set, is the run's cgroup (v1, thread entry), which the
	// thread enters for the fork.
	cg   *runCgroup
	done chan error
}

// sharedCgroup names the fork server's cgroup in the node's directory.
const sharedCgroup = "shared"

// sharedPidsFactor sizes the shared budget: this many runs' worth of the
// per-run pids limit.
const sharedPidsFactor = 8

// newSharedCgroup creates the node's shared pids cgroup (cgroup v1 only,
// with the node's own cgroup known); "" when there can be none.
func newSharedCgroup(c *cgroups, pidsLimit int64) (string, error) {
	if c == nil || c.pids == "" || c.v2 || c.pidsHome == "" || pidsLimit <= 0 {
		return "", nil
	}
	if err := c.ensureParents(c.pids); err != nil {
		return "", err
	}
	dir := filepath.Join(c.pids, sharedCgroup)
	if err := unix.Mkdir(dir, 0o755); err != nil && err != unix.EEXIST {
		return "", fmt.Errorf("process: shared cgroup: %w", err)
	}
	if err := writeCgroupFile(filepath.Join(dir, "pids.max"), strconv.FormatInt(sharedPidsFactor*pidsLimit, 10)); err != nil {
		return "", err
	}
	return dir, nil
}

// newForkServer starts the thread, in cgroup dir (unless ""), confined by
// policy (unless nil).
func newForkServer(log *slog.Logger, dir string, policy *sandbox.ThreadPolicy) (*forkServer, error) {
	f := &forkServer{log: log, reqs: make(chan forkRequest), dir: dir}
	ready := make(chan error)
	go func() {
		// Never unlocked: when this goroutine ends the thread ends too, so
		// no other goroutine ever runs in the cgroup or the confinement.
		goruntime.LockOSThread()
		if err := f.setUp(policy); err != nil {
			ready <- err
			return
		}
		close(ready)
		for req := range f.reqs {
			req.done <- f.fork(req)
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return f, nil
}

// setUp moves the calling thread into the shared cgroup and confines it.
func (f *forkServer) setUp(policy *sandbox.ThreadPolicy) error {
	if f.dir != "" {
		if err := writeCgroupFile(filepath.Join(f.dir, "tasks"), strconv.Itoa(unix.Gettid())); err != nil {
			return fmt.Errorf("process: entering the shared cgroup: %w", err)
		}
	}
	if policy == nil {
		return nil
	}
	feats, err := policy.Apply()
	f.features = feats
	return err
}

// stop ends the fork server: its thread exits (it is locked), which leaves
// the shared cgroup.
func (f *forkServer) stop() { close(f.reqs) }

// removeSharedCgroup removes the shared cgroup, once the threads in it
// have ended, and the node's and spear's directories if nothing else uses
// them.
func removeSharedCgroup(dir string) {
	if dir == "" {
		return
	}
	for range 50 {
		if err := unix.Rmdir(dir); err == nil || err == unix.ENOENT {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = unix.Rmdir(filepath.Dir(dir))
	_ = unix.Rmdir(filepath.Dir(filepath.Dir(dir)))
}

// start starts cmd from the fork server's thread.
func (f *forkServer) start(cmd *exec.Cmd) error {
	return f.startIn(cmd, nil)
}

// startIn starts cmd from the fork server's thread, born in cg when the
// thread can enter it (cgroup v1), else where the thread is.
func (f *forkServer) startIn(cmd *exec.Cmd, cg *runCgroup) error {
	done := make(chan error, 1)
	f.reqs <- forkRequest{cmd: cmd, cg: cg, done: done}
	return <-done
}

// fork runs on the thread: it enters the request's cgroup, forks, and
// goes back to the shared cgroup (or the node's).
func (f *forkServer) fork(req forkRequest) error {
	if req.cg == nil {
		return req.cmd.Start()
	}
	leave, _, err := req.cg.enterThread(f.dir)
	if err != nil {
		return fmt.Errorf("process: entering the run's cgroup: %w", err)
	}
	err = req.cmd.Start()
	if leave != nil {
		if lerr := leave(); lerr != nil {
			// The thread stays in the run's cgroup (which then cannot be
			// removed) until the node ends: say so loudly.
			f.log.Error("process: a launcher thread could not leave a run's cgroup", "err", lerr)
		}
	}
	return err
}
