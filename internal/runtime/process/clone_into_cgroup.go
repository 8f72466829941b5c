package process

// The cgroup v2 way to start a run's child: cloned straight into the run's
// cgroup, so that it never runs outside it. Cgroup v1 needs none of this
// (the forking thread enters the cgroup: see enterThread).

import (
	"errors"
	"os"
	"os/exec"

	"golang.org/x/sys/unix"
)

// startInCgroupV2 starts the run's child directly in its cgroup v2 (clone3
// with CLONE_INTO_CGROUP, Linux 5.7 or later): there is no moment at which
// it runs, forks or allocates outside it. The limits were set when the
// cgroup was created, and no node thread enters it. On an older kernel the
// child is started as usual and moved in right after (see Run).
//
// Not exercised by the tests on cgroup v1 machines.
func (x *run) startInCgroupV2() error {
	dir, err := os.Open(x.cg.dirs[0])
	if err != nil {
		x.r.log.Warn("process: cannot open the run's cgroup; moving the child in after it has started", "execution_id", x.inv.ExecutionID, "err", err)
		return x.r.startLocked(x.cmd, x.cg, x.inv.ExecutionID)
	}
	defer dir.Close()
	into := cloneCmd(x.cmd)
	into.SysProcAttr.UseCgroupFD, into.SysProcAttr.CgroupFD = true, int(dir.Fd())
	err = x.r.startLocked(into, x.cg, x.inv.ExecutionID)
	if !cloneIntoUnsupported(err) {
		x.cmd = into
		return err
	}
	x.r.log.Debug("process: the kernel cannot clone into a cgroup; moving the child in after it has started", "err", err)
	return x.r.startLocked(x.cmd, x.cg, x.inv.ExecutionID)
}

// cloneCmd copies a command that has not been started (one that failed to
// start cannot be started again).
func cloneCmd(cmd *exec.Cmd) *exec.Cmd {
	attr := *cmd.SysProcAttr
	return &exec.Cmd{
		Path: cmd.Path, Args: cmd.Args, Env: cmd.Env,
		Stdin: cmd.Stdin, Stdout: cmd.Stdout, Stderr: cmd.Stderr,
		SysProcAttr: &attr,
	}
}

// cloneIntoUnsupported reports whether a start failed because the kernel
// has no clone3 (ENOSYS) or no CLONE_INTO_CGROUP (EINVAL, E2BIG).
func cloneIntoUnsupported(err error) bool {
	return errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.E2BIG)
}
