package process

// The sandbox of runs (see package sandbox and docs/SECURITY.md): every
// run is forked by a launcher thread that carries the per-thread
// confinement (network namespace, no_new_privs, Landlock, seccomp), as an
// unprivileged uid of its own, in a fresh work dir, under rlimits.

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/spear-go/spear/internal/sandbox"
)

// Rlimits of sandboxed functions.
const (
	// sandboxFileSize caps the size of any file a function writes.
	sandboxFileSize = 1 << 30
	// sandboxOpenFiles caps its open file descriptors.
	sandboxOpenFiles = 4096
)

// sandboxed is the sandbox state of a Runtime; nil when it is off.
type sandboxed struct {
	log     *slog.Logger
	slots   *sandbox.Slots // nil: the node is not root
	sweeper *sandbox.Sweeper
	work    *sandbox.WorkDirs
	// tmpRoot: work is in a temporary directory of its own, removed at
	// Close.
	tmpRoot bool
	// shared is the shared pids cgroup the launchers live in; "" for none.
	shared string
	policy sandbox.ThreadPolicy
	// rlimits: the node can set the rlimits of a run (see jail.limit).
	rlimits bool
	// isolated forks runs in the network namespace (when there is one);
	// host, made on first use, forks those of network: host tasks.
	isolated *forkServer
	hostMu   sync.Mutex
	host     *forkServer
	report   sandbox.Report
}

// sandboxSetup is what newSandboxed needs of the Runtime being made.
type sandboxSetup struct {
	opts       Options
	cg         *cgroups
	cgroupsWhy string
	pidsLimit  int64
	log        *slog.Logger
}

// newSandboxed sets up every level the host allows and reports them.
func newSandboxed(s sandboxSetup) (*sandboxed, error) {
	sb := &sandboxed{log: s.log}
	root := os.Geteuid() == 0
	priv := sandbox.Level{Name: "privileges", Missing: map[string]string{}}
	netw := sandbox.Level{Name: "network", Missing: map[string]string{}}
	if err := sb.makeWorkDirs(s.opts); err != nil {
		return nil, err
	}
	if root {
		base := s.opts.UIDBase
		if base == 0 {
			base = sandbox.DefaultUIDBase(s.opts.NodeID)
		}
		slots, err := sandbox.NewSlots(base, sandbox.DefaultSlots)
		if err != nil {
			return nil, err
		}
		sb.slots = slots
		priv.On = append(priv.On, sandbox.FeatUID)
		if ns, err := sandbox.NewLoopbackNetNS(); err != nil {
			netw.Missing[sandbox.FeatNetNS] = err.Error()
		} else {
			sb.policy.NetNS = ns
		}
	} else {
		priv.Missing[sandbox.FeatUID] = "the node does not run as root"
		netw.Missing[sandbox.FeatNetNS] = "the node does not run as root"
	}
	sb.policy.NoNewPrivs = true
	if _, err := sandbox.LandlockABI(); err != nil {
		priv.Missing[sandbox.FeatLandlock] = err.Error()
	} else {
		sb.policy.FS = &sandbox.FSRules{
			ReadExec:   append(sandbox.SystemDirs(), s.opts.ReadRoots...),
			Write:      []string{sb.work.Root()},
			WriteFiles: []string{"/dev/null", "/dev/zero", "/dev/full"},
		}
		sb.allowCgroupEntry(s.cg)
	}
	if err := sandbox.CheckSeccomp(); err != nil {
		priv.Missing[sandbox.FeatSeccomp] = err.Error()
	} else {
		sb.policy.Seccomp = true
	}
	sb.sweeper = sandbox.NewSweeper(sb.slots, sb.work, s.log.Warn)
	shared, err := newSharedCgroup(s.cg, s.pidsLimit)
	if err != nil {
		s.log.Warn("process: no shared pids cgroup; each run joins its own", "err", err)
	}
	sb.shared = shared
	sb.isolated, err = sb.newLauncher(sb.policy)
	if err != nil {
		sb.close()
		return nil, err
	}
	for _, f := range []string{sandbox.FeatNoNewPrivs, sandbox.FeatLandlock, sandbox.FeatSeccomp} {
		if slices.Contains(sb.isolated.features, f) {
			priv.On = append(priv.On, f)
		}
	}
	if slices.Contains(sb.isolated.features, sandbox.FeatNetNS) {
		netw.On = append(netw.On, sandbox.FeatNetNS+" (loopback only)")
	}
	sb.report = sandbox.Report{Mode: sandbox.ModeAuto, Levels: []sandbox.Level{
		sb.processLevel(), priv, cgroupsLevel(s.cg, s.cgroupsWhy), netw,
	}}
	return sb, nil
}

// processLevel reports the process level, deciding on the rlimits: the
// node sets them on a child running as a slot's uid only with
// CAP_SYS_RESOURCE (a container's default set lacks it), and on its own
// uid's children always.
func (sb *sandboxed) processLevel() sandbox.Level {
	l := sandbox.Level{Name: "process", On: []string{sandbox.FeatProcessGroup, sandbox.FeatEnv, sandbox.FeatWorkDir},
		Missing: map[string]string{}}
	sb.rlimits = sb.slots == nil || hasCapability(unix.CAP_SYS_RESOURCE)
	if sb.rlimits {
		l.On = append(l.On, sandbox.FeatRlimits)
	} else {
		l.Missing[sandbox.FeatRlimits] = "the node lacks CAP_SYS_RESOURCE, which setting the rlimits of another uid's process takes"
	}
	return l
}

// hasCapability reports whether capability c is in the node's effective
// set.
func hasCapability(c int) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[c/32].Effective&(1<<(uint(c)%32)) != 0
}

// makeWorkDirs makes the root of the work dirs: opts.WorkRoot when every
// slot uid can reach it, else a temporary directory.
func (sb *sandboxed) makeWorkDirs(opts Options) error {
	root, err := filepath.Abs(opts.WorkRoot)
	if opts.WorkRoot == "" || err != nil || !sandbox.Traversable(filepath.Dir(root)) {
		tmp, err := os.MkdirTemp("", "spear-work-")
		if err != nil {
			return fmt.Errorf("process: work dirs: %w", err)
		}
		root, sb.tmpRoot = tmp, true
	}
	w, err := sandbox.NewWorkDirs(root)
	if err != nil {
		return err
	}
	sb.work = w
	return nil
}

// allowCgroupEntry lets the launcher thread (not its children: cgroup
// files are root's) enter runs' cgroups and go back (see enterThread):
// the node's own cgroups, which hold the runs' and outlive them (a rule
// holds on to a directory, not a path).
func (sb *sandboxed) allowCgroupEntry(cg *cgroups) {
	if cg == nil || cg.v2 {
		return
	}
	for _, d := range []string{cg.pidsHome, cg.memoryHome} {
		if d != "" {
			sb.policy.FS.Write = append(sb.policy.FS.Write, d)
		}
	}
}

// newLauncher starts a fork server confined by policy, in the shared
// cgroup. A policy that cannot be applied is an error: the node reports
// what it applies, so it does not quietly apply less.
func (sb *sandboxed) newLauncher(policy sandbox.ThreadPolicy) (*forkServer, error) {
	f, err := newForkServer(sb.log, sb.shared, &policy)
	if err != nil {
		return nil, fmt.Errorf("process: sandbox launcher: %w", err)
	}
	return f, nil
}

// launcher returns the fork server for a run: the isolated one, or for a
// network: host task one without the network namespace.
func (sb *sandboxed) launcher(hostNetwork bool) (*forkServer, error) {
	if !hostNetwork || sb.policy.NetNS == nil {
		return sb.isolated, nil
	}
	sb.hostMu.Lock()
	defer sb.hostMu.Unlock()
	if sb.host == nil {
		p := sb.policy
		p.NetNS = nil
		f, err := sb.newLauncher(p)
		if err != nil {
			return nil, err
		}
		sb.host = f
	}
	return sb.host, nil
}

// close stops the launchers and removes the shared cgroup and a
// temporary work root.
func (sb *sandboxed) close() {
	for _, f := range []*forkServer{sb.isolated, sb.host} {
		if f != nil {
			f.stop()
		}
	}
	removeSharedCgroup(sb.shared)
	if sb.sweeper != nil {
		sb.sweeper.Close()
	}
	if sb.policy.NetNS != nil {
		_ = sb.policy.NetNS.Close()
	}
	if sb.tmpRoot {
		_ = os.RemoveAll(sb.work.Root())
	}
}

// cgroupsLevel reports level 3.
func cgroupsLevel(cg *cgroups, why string) sandbox.Level {
	l := sandbox.Level{Name: "cgroups", Missing: map[string]string{}}
	if cg == nil {
		l.Missing["pids, memory"] = why
		return l
	}
	for _, c := range []struct{ name, dir string }{{"pids", cg.pids}, {"memory", cg.memory}} {
		if c.dir != "" {
			l.On = append(l.On, c.name)
		} else {
			l.Missing[c.name] = why
		}
	}
	return l
}

// offReport is the report of a runtime with the sandbox off.
func offReport() sandbox.Report {
	return sandbox.Report{Mode: sandbox.ModeOff}
}

// SandboxReport says which sandbox levels the runtime applies.
func (r *Runtime) SandboxReport() sandbox.Report {
	if r.sb == nil {
		return offReport()
	}
	return r.sb.report
}
