package process

// One run's part of the sandbox: its slot uid, its work dir, the artifact
// it executes by descriptor, its launcher and its rlimits.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/sandbox"
)

// artifactFD is the descriptor a sandboxed child executes its artifact
// from: the node opens the artifact (a uid of a slot may not reach its
// directory), and the child runs exactly the file that was opened.
const artifactFD = 3

// jail is a run's sandbox.
type jail struct {
	sb       *sandboxed
	launcher *forkServer
	uid      int // -1: none
	dir      string
	artifact *os.File
	left     bool
}

// enter takes a slot and a work dir for the run and makes cmd start in
// them. On error nothing is left taken.
func (sb *sandboxed) enter(inv *runtime.Invocation, cmd *exec.Cmd) (*jail, error) {
	l, err := sb.launcher(inv.HostNetwork)
	if err != nil {
		return nil, fmt.Errorf("process: %w: %w", errdefs.ErrInternal, err)
	}
	j := &jail{sb: sb, launcher: l, uid: -1}
	if sb.slots != nil {
		j.uid = sb.slots.Acquire()
	}
	if j.dir, err = sb.work.Take(j.uid); err != nil {
		j.leave()
		return nil, fmt.Errorf("process: %w: %w", errdefs.ErrInternal, err)
	}
	if j.artifact, err = os.Open(cmd.Path); err != nil {
		j.leave()
		return nil, startError(cmd.Path, err)
	}
	cmd.Path = fmt.Sprintf("/proc/self/fd/%d", artifactFD)
	cmd.ExtraFiles = []*os.File{j.artifact}
	cmd.Dir = j.dir
	cmd.Env = workDirEnv(cmd.Env, inv.Env, j.dir)
	if j.uid >= 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(j.uid), Gid: uint32(j.uid), Groups: []uint32{}}
	}
	return j, nil
}

// workDirEnv adds HOME and TMPDIR, the work dir, to env unless the task
// set them.
func workDirEnv(env []string, set map[string]string, dir string) []string {
	for _, k := range []string{"HOME", "TMPDIR"} {
		if _, ok := set[k]; !ok {
			env = append(env, k+"="+dir)
		}
	}
	sort.Strings(env)
	return env
}

// start starts the run's child from its launcher, born in the run's
// cgroup: with cgroup v1 the launcher thread enters it for the fork, with
// v2 the child is cloned straight into it; where neither works it is moved
// in right after (see Run).
func (j *jail) start(x *run) error {
	defer func() { _ = j.artifact.Close() }()
	if x.cg == nil || !x.cg.c.v2 {
		return j.launcher.startIn(x.cmd, x.cg)
	}
	dir, err := os.Open(x.cg.dirs[0])
	if err != nil {
		return j.launcher.start(x.cmd)
	}
	defer dir.Close()
	into := cloneCmd(x.cmd)
	into.SysProcAttr.UseCgroupFD, into.SysProcAttr.CgroupFD = true, int(dir.Fd())
	err = j.launcher.start(into)
	if !cloneIntoUnsupported(err) {
		x.cmd = into
		return err
	}
	return j.launcher.start(x.cmd)
}

// limit sets the started child's rlimits, where the node can: no core
// dumps, a cap on file size and on open files. Its descendants inherit
// them.
func (j *jail) limit(pid int) {
	if !j.sb.rlimits {
		return
	}
	for _, l := range []struct {
		res int
		max uint64
	}{
		{unix.RLIMIT_CORE, 0},
		{unix.RLIMIT_FSIZE, sandboxFileSize},
		{unix.RLIMIT_NOFILE, sandboxOpenFiles},
	} {
		err := unix.Prlimit(pid, l.res, &unix.Rlimit{Cur: l.max, Max: l.max}, nil)
		if err != nil && !errors.Is(err, unix.ESRCH) {
			j.sb.log.Warn("process: setting an rlimit", "pid", pid, "resource", l.res, "err", err)
		}
	}
}

// leave gives the slot back once every process left under its uid is
// killed and the work dir removed, off the caller's path (see
// sandbox.Sweeper). Call it once the run's group is gone; calls after the
// first do nothing.
func (j *jail) leave() {
	if j == nil || j.left {
		return
	}
	j.left = true
	j.sb.sweeper.Release(j.uid, j.dir)
}

// featureOrder is the order features are listed in.
var featureOrder = []string{
	sandbox.FeatProcessGroup, sandbox.FeatEnv, sandbox.FeatWorkDir, sandbox.FeatRlimits, sandbox.FeatUID,
	sandbox.FeatNoNewPrivs, sandbox.FeatLandlock, sandbox.FeatSeccomp, sandbox.FeatCgroups, sandbox.FeatNetNS,
}

// features lists the sandbox features the run got.
func (x *run) features() string {
	have := []string{sandbox.FeatProcessGroup, sandbox.FeatEnv}
	if x.jail != nil {
		have = append(have, sandbox.FeatWorkDir)
		if x.jail.sb.rlimits {
			have = append(have, sandbox.FeatRlimits)
		}
		if x.jail.uid >= 0 {
			have = append(have, sandbox.FeatUID)
		}
		have = append(have, x.jail.launcher.features...)
	}
	if x.cg != nil || x.sharedMax0 >= 0 {
		have = append(have, sandbox.FeatCgroups)
	}
	var out []string
	for _, f := range featureOrder {
		if slices.Contains(have, f) {
			out = append(out, f)
		}
	}
	return strings.Join(out, ",")
}
