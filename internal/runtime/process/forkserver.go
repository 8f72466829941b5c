package process

import (
	"fmt"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// forkServer starts the processes of runs without a memory limit from one
// OS thread that lives in a shared pids cgroup of the node: children are
// born inside it (cgroup membership is inherited at fork), so a fork bomb
// is bounded by the shared pids.max at no cost per run — joining a cgroup
// costs milliseconds on cgroup v1, forking inside one costs nothing. The
// thread lives as long as the node, which also makes the children's
// parent-death signal fire exactly when the node dies.
type forkServer struct {
	reqs chan forkRequest
	dir  string
}

type forkRequest struct {
	cmd  *exec.Cmd
	done chan error
}

// sharedCgroup names the fork server's cgroup in the node's directory.
const sharedCgroup = "shared"

// sharedPidsFactor sizes the shared budget: this many runs' worth of the
// per-run pids limit.
const sharedPidsFactor = 8

// newForkServer creates the shared cgroup and the thread in it; nil when
// that is not possible (then runs start as usual).
func newForkServer(c *cgroups, pidsLimit int64) (*forkServer, error) {
	if c == nil || c.pids == "" || c.v2 || c.pidsHome == "" || pidsLimit <= 0 {
		return nil, nil
	}
	if err := c.ensureParents(c.pids); err != nil {
		return nil, err
	}
	dir := filepath.Join(c.pids, sharedCgroup)
	if err := unix.Mkdir(dir, 0o755); err != nil && err != unix.EEXIST {
		return nil, fmt.Errorf("process: shared cgroup: %w", err)
	}
	if err := writeCgroupFile(filepath.Join(dir, "pids.max"), strconv.FormatInt(sharedPidsFactor*pidsLimit, 10)); err != nil {
		return nil, err
	}
	f := &forkServer{reqs: make(chan forkRequest), dir: dir}
	ready := make(chan error)
	go func() {
		// Never unlocked: when this goroutine ends the thread ends too, so
		// no other goroutine ever runs in the cgroup.
		goruntime.LockOSThread()
		if err := writeCgroupFile(filepath.Join(dir, "tasks"), strconv.Itoa(unix.Gettid())); err != nil {
			ready <- err
			return
		}
		close(ready)
		for req := range f.reqs {
			req.done <- req.cmd.Start()
		}
	}()
	if err := <-ready; err != nil {
		return nil, fmt.Errorf("process: entering the shared cgroup: %w", err)
	}
	return f, nil
}

// stop ends the fork server: its thread exits (it is locked), which leaves
// the shared cgroup; then the cgroup and its empty parents are removed.
func (f *forkServer) stop() {
	close(f.reqs)
	for range 50 {
		if err := unix.Rmdir(f.dir); err == nil || err == unix.ENOENT {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The node's and spear's directories, if nothing else uses them.
	_ = unix.Rmdir(filepath.Dir(f.dir))
	_ = unix.Rmdir(filepath.Dir(filepath.Dir(f.dir)))
}

// start starts cmd from the fork server's thread.
func (f *forkServer) start(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	f.reqs <- forkRequest{cmd: cmd, done: done}
	return <-done
}
