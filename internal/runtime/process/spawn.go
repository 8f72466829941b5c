package process

// Starting the child: from a locked OS thread (for the parent-death signal),
// born inside the run's cgroup. On cgroup v1 the forking thread enters the
// cgroup for the fork (see enterThread); on cgroup v2 the child is cloned
// straight into it (startInCgroupV2).

import (
	"os/exec"
	goruntime "runtime"
)

// startLocked starts cmd from this goroutine's thread, locked (for the
// parent-death signal), inside the run's cgroup when it has one, so the
// child is born in it.
func (r *Runtime) startLocked(cmd *exec.Cmd, cg *runCgroup, execID string) error {
	goruntime.LockOSThread()
	var leave func() error
	if cg != nil {
		var eerr error
		if leave, _, eerr = cg.enterThread(""); eerr != nil {
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
