package process

// Linux control groups for runs: one cgroup per run, in the pids and memory
// hierarchies (cgroup v1) or in the unified hierarchy (cgroup v2), so that a
// run's processes are limited in number and memory as a whole, its peak
// memory is measured exactly, and everything it started, even descendants
// that left its process group, can be found and killed.
//
// The cgroups are nested under the node's own cgroup (read from
// /proc/self/cgroup), in spear/<node-id>/<execution-id>, so that the limits
// of whatever runs the node still apply to its functions. With v1 this
// machine-wide layout is, for a node in the root cgroup,
// /sys/fs/cgroup/pids/spear/<node>/<run> and
// /sys/fs/cgroup/memory/spear/<node>/<run>.

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spear-go/spear/internal/errdefs"
)

// cgroupMount is where the cgroup filesystems are mounted.
const cgroupMount = "/sys/fs/cgroup"

// cgroupDirName is the directory, under the node's own cgroup, that holds
// the cgroups of all nodes.
const cgroupDirName = "spear"

// cgroupRemoveTimeout bounds how long removing a run's cgroups keeps killing
// what is left in them and retrying.
const cgroupRemoveTimeout = 2 * time.Second

// cgroups is where a Runtime creates the cgroups of its runs. A nil
// *cgroups means none are available.
type cgroups struct {
	v2 bool
	// pids and memory are this node's directories (spear/<node>) in the
	// pids and memory hierarchies; "" when the controller is not
	// available. With v2 both are the same directory when set.
	pids, memory string
	// pidsHome and memoryHome are, with v1, the node's own cgroup in each
	// hierarchy, where a thread that entered a run's cgroup goes back to
	// (see enterThread); "" when unknown.
	pidsHome, memoryHome string
	// v2Self is, with v2, the node's own cgroup (whose
	// cgroup.subtree_control must enable the controllers).
	v2Self string
	// controllers is, with v2, what to write to cgroup.subtree_control.
	controllers string

	seq atomic.Uint64
}

// detectCgroups returns where runs' cgroups go, or nil and why cgroups
// cannot be used. It creates and removes a probe cgroup.
func detectCgroups(nodeID string) (*cgroups, string) {
	self, err := selfCgroups()
	if err != nil {
		return nil, err.Error()
	}
	node := sanitizeCgroupName(nodeID)
	if node == "" {
		node = "node"
	}
	if isDir(filepath.Join(cgroupMount, "pids")) || isDir(filepath.Join(cgroupMount, "memory")) {
		return detectCgroupsV1(self, node)
	}
	if _, err := os.Stat(filepath.Join(cgroupMount, "cgroup.controllers")); err != nil {
		return nil, "no cgroup v1 pids or memory hierarchy and no cgroup v2 unified hierarchy"
	}
	return detectCgroupsV2(self, node)
}

// detectCgroupsV1 finds the pids and memory hierarchies of cgroup v1 for
// node, given the node's own cgroups (see selfCgroups). The reason names
// the controllers that cannot be used.
func detectCgroupsV1(self map[string]string, node string) (*cgroups, string) {
	c := &cgroups{}
	var reasons []string
	for _, h := range []struct {
		controller string
		file       string // a file every cgroup of the controller has
		dst, home  *string
	}{
		{"pids", "pids.max", &c.pids, &c.pidsHome},
		{"memory", "memory.limit_in_bytes", &c.memory, &c.memoryHome},
	} {
		mount := filepath.Join(cgroupMount, h.controller)
		if !isDir(mount) {
			reasons = append(reasons, h.controller+": not mounted")
			continue
		}
		base := filepath.Join(mount, self[h.controller])
		home := base
		if !isDir(base) {
			// The path is relative to another namespace's root.
			base, home = mount, ""
		}
		dir := filepath.Join(base, cgroupDirName, node)
		if err := c.probe(dir, h.file); err != nil {
			reasons = append(reasons, fmt.Sprintf("%s: %v", h.controller, err))
			continue
		}
		*h.dst, *h.home = dir, home
	}
	if c.pids == "" && c.memory == "" {
		return nil, "cgroup v1: " + strings.Join(reasons, "; ")
	}
	return c, strings.Join(reasons, "; ")
}

// detectCgroupsV2 finds the pids and memory controllers of the cgroup v2
// unified hierarchy for node, given the node's own cgroup (see
// selfCgroups).
func detectCgroupsV2(self map[string]string, node string) (*cgroups, string) {
	selfDir := filepath.Join(cgroupMount, self[""])
	if !isDir(selfDir) {
		selfDir = cgroupMount
	}
	avail, err := os.ReadFile(filepath.Join(selfDir, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Sprintf("cgroup v2: %v", err)
	}
	var ctrls []string
	for _, f := range strings.Fields(string(avail)) {
		if f == "pids" || f == "memory" {
			ctrls = append(ctrls, "+"+f)
		}
	}
	if len(ctrls) == 0 {
		return nil, "cgroup v2: neither pids nor memory is available to the node's cgroup"
	}
	c := &cgroups{v2: true, v2Self: selfDir, controllers: strings.Join(ctrls, " ")}
	dir := filepath.Join(selfDir, cgroupDirName, node)
	probeFile := "pids.max"
	if !strings.Contains(c.controllers, "pids") {
		probeFile = "memory.max"
	}
	if err := c.probe(dir, probeFile); err != nil {
		return nil, fmt.Sprintf("cgroup v2: %v", err)
	}
	if strings.Contains(c.controllers, "pids") {
		c.pids = dir
	}
	if strings.Contains(c.controllers, "memory") {
		c.memory = dir
	}
	return c, ""
}

// probe checks that a run's cgroup can be created under node dir and has
// file, and removes what it created.
func (c *cgroups) probe(dir, file string) error {
	if err := c.ensureParents(dir); err != nil {
		return err
	}
	defer removeParents(dir)
	p := filepath.Join(dir, "probe-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	defer func() { _ = unix.Rmdir(p) }()
	if _, err := os.Stat(filepath.Join(p, file)); err != nil {
		return err
	}
	return nil
}

// ensureParents creates node dir (spear/<node>) and, with v2, enables the
// controllers for the levels below the node's own cgroup.
func (c *cgroups) ensureParents(dir string) error {
	if !c.v2 {
		return os.MkdirAll(dir, 0o755)
	}
	spear := filepath.Dir(dir)
	for _, step := range []struct{ mkdir, enable string }{
		{"", c.v2Self},
		{spear, spear},
		{dir, ""},
	} {
		if step.mkdir != "" {
			if err := os.Mkdir(step.mkdir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
		}
		if step.enable != "" {
			if err := writeCgroupFile(filepath.Join(step.enable, "cgroup.subtree_control"), c.controllers); err != nil {
				return err
			}
		}
	}
	return nil
}

// hierarchies returns the node dirs to create run cgroups in, without
// duplicates.
func (c *cgroups) hierarchies() []string {
	var dirs []string
	for _, d := range []string{c.pids, c.memory} {
		if d != "" && (len(dirs) == 0 || dirs[0] != d) {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// runCgroup is the cgroup (one directory per hierarchy) of one run.
type runCgroup struct {
	c *cgroups
	// dirs are the run's directories; pids and memory are among them, or
	// "" when that controller is not used.
	dirs         []string
	pids, memory string
}

// create makes the cgroup of a run and sets its limits: pids.max to
// pidsLimit when > 0, the memory limit to memLimit when > 0. Errors wrap
// errdefs.ErrInternal.
//
// With thread entry (see enterThread) the memory limit is not set: the
// caller sets it with setMemoryLimit.
func (c *cgroups) create(execID string, pidsLimit, memLimit int64) (*runCgroup, error) {
	name := sanitizeCgroupName(execID)
	if name == "" {
		name = "run"
	}
	base := name
	g := &runCgroup{c: c}
	var err error
	for attempt := 0; attempt < 8; attempt++ {
		g.dirs, g.pids, g.memory = nil, "", ""
		err = nil
		for _, h := range c.hierarchies() {
			if h == c.memory && memLimit <= 0 && !c.v2 {
				// Joining a v1 hierarchy costs milliseconds (the kernel
				// synchronises RCU): the memory cgroup only for runs with
				// a memory limit; the others' peak is sampled.
				continue
			}
			if err = c.ensureParents(h); err != nil {
				break
			}
			d := filepath.Join(h, name)
			if err = os.Mkdir(d, 0o755); err != nil {
				break
			}
			g.dirs = append(g.dirs, d)
			if h == c.pids {
				g.pids = d
			}
			if h == c.memory {
				g.memory = d
			}
		}
		if err == nil {
			break
		}
		g.remove()
		switch {
		case errors.Is(err, fs.ErrExist):
			// Another run with the same execution id (or a name of a
			// control file): take another name.
			name = fmt.Sprintf("%s-%d", base, c.seq.Add(1))
		case errors.Is(err, fs.ErrNotExist):
			// A parent was removed by a run ending at the same time.
		default:
			return nil, fmt.Errorf("process: creating cgroup: %w: %w", errdefs.ErrInternal, err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("process: creating cgroup: %w: %w", errdefs.ErrInternal, err)
	}
	if !g.threadEntry() {
		// Otherwise the memory limit is set by setMemoryLimit once
		// the forking thread has left (see enterThread).
		err = g.setMemoryLimit(memLimit)
	}
	if err == nil {
		err = g.setPidsLimit(pidsLimit)
	}
	if err != nil {
		g.remove()
		return nil, fmt.Errorf("process: setting cgroup limits: %w: %w", errdefs.ErrInternal, err)
	}
	return g, nil
}

func (g *runCgroup) setPidsLimit(pidsLimit int64) error {
	if g.pids != "" && pidsLimit > 0 {
		return writeCgroupFile(filepath.Join(g.pids, "pids.max"), strconv.FormatInt(pidsLimit, 10))
	}
	return nil
}

// threadEntry reports whether the child is to be forked from inside the
// run's cgroup by a thread that enters it (v1, with the node's own cgroup
// known in every hierarchy used).
func (g *runCgroup) threadEntry() bool {
	return !g.c.v2 && (g.pids == "" || g.c.pidsHome != "") && (g.memory == "" || g.c.memoryHome != "")
}

// enterThread moves the calling thread, which must be locked to its
// goroutine, into the run's cgroup (v1 lets single threads move), so that
// the child it forks next is born in it: no window in which the child, or
// what it forks at once, is outside. The returned function moves the thread
// back to the node's cgroup. While the thread is in, it counts towards
// pids.max, and the memory limit is not set yet: an OOM kill in the run's
// cgroup could pick the node (set it with setMemoryLimit after leaving).
// The node's memory stays charged to the node: v1 charges an address space
// to the cgroup of its owner, the node's main thread, and a new Go thread
// is never started from a locked thread. ok is false without thread entry.
//
// pidsHome, when set, is where the thread goes back to in the pids
// hierarchy instead of the node's own cgroup (a launcher thread lives in
// the shared cgroup).
func (g *runCgroup) enterThread(pidsHome string) (leave func() error, ok bool, err error) {
	if !g.threadEntry() {
		return nil, false, nil
	}
	tid := strconv.Itoa(unix.Gettid())
	var entered []string // homes to go back to
	leave = func() error {
		var errs []error
		for _, home := range entered {
			if err := writeCgroupFile(filepath.Join(home, "tasks"), tid); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	for _, h := range []struct{ dir, home string }{{g.pids, cmp.Or(pidsHome, g.c.pidsHome)}, {g.memory, g.c.memoryHome}} {
		if h.dir == "" {
			continue
		}
		if err := writeCgroupFile(filepath.Join(h.dir, "tasks"), tid); err != nil {
			return nil, false, errors.Join(err, leave())
		}
		entered = append(entered, h.home)
	}
	return leave, true, nil
}

// setMemoryLimit sets the memory limit of the run's cgroup to memLimit
// when > 0.
func (g *runCgroup) setMemoryLimit(memLimit int64) error {
	if g.memory == "" || memLimit <= 0 {
		return nil
	}
	lim := strconv.FormatInt(memLimit, 10)
	if g.c.v2 {
		if err := writeCgroupFile(filepath.Join(g.memory, "memory.max"), lim); err != nil {
			return err
		}
		// No swapping past the limit either (as memsw does with v1).
		if p := filepath.Join(g.memory, "memory.swap.max"); exists(p) {
			return writeCgroupFile(p, "0")
		}
		return nil
	}
	if err := writeCgroupFile(filepath.Join(g.memory, "memory.limit_in_bytes"), lim); err != nil {
		return err
	}
	// Memory plus swap: the same limit, so that swap does not extend it.
	// It must not be below memory.limit_in_bytes, hence set after it.
	if p := filepath.Join(g.memory, "memory.memsw.limit_in_bytes"); exists(p) {
		return writeCgroupFile(p, lim)
	}
	return nil
}

// add moves process pid into the run's cgroup. A process that has already
// exited is not an error.
func (g *runCgroup) add(pid int) error {
	for _, d := range g.dirs {
		err := writeCgroupFile(filepath.Join(d, "cgroup.procs"), strconv.Itoa(pid))
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("process: adding pid %d to cgroup %s: %w: %w", pid, d, errdefs.ErrInternal, err)
		}
	}
	return nil
}

// memoryStats returns the peak memory of the run's cgroup and whether it
// reached its limit: with v1, memory.failcnt > 0 (usage hit the limit) or
// an OOM kill counted in memory.oom_control; with v2, a "max" or "oom_kill"
// event in memory.events. ok is false when there is no memory cgroup or the
// peak cannot be read.
func (g *runCgroup) memoryStats() (peak int64, hit bool, ok bool) {
	if g == nil || g.memory == "" {
		return 0, false, false
	}
	if g.c.v2 {
		peak, err := readCgroupInt(filepath.Join(g.memory, "memory.peak"))
		if err != nil {
			return 0, false, false
		}
		ev := readKeyed(filepath.Join(g.memory, "memory.events"))
		return peak, ev["max"] > 0 || ev["oom_kill"] > 0, true
	}
	peak, err := readCgroupInt(filepath.Join(g.memory, "memory.max_usage_in_bytes"))
	if err != nil {
		return 0, false, false
	}
	failcnt, _ := readCgroupInt(filepath.Join(g.memory, "memory.failcnt"))
	oom := readKeyed(filepath.Join(g.memory, "memory.oom_control"))
	return peak, failcnt > 0 || oom["oom_kill"] > 0, true
}

// killAll sends SIGKILL to every process in the run's cgroup and reports
// whether it found any. Without cgroup.kill (v1), the processes are read
// from cgroup.procs and killed one by one: a process that exits and whose
// pid is reused between the two is the (tiny) risk every v1 runtime takes.
func (g *runCgroup) killAll() bool {
	found := false
	self := os.Getpid()
	for _, d := range g.dirs {
		if g.c.v2 {
			if p := filepath.Join(d, "cgroup.kill"); exists(p) {
				if populated(d) {
					found = true
					_ = writeCgroupFile(p, "1")
				}
				continue
			}
		}
		for _, pid := range readPids(filepath.Join(d, "cgroup.procs")) {
			if pid > 0 && pid != self {
				found = true
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
	}
	return found
}

// destroy kills what is left in the run's cgroup and removes it, retrying
// until it is empty (bounded by cgroupRemoveTimeout), then removes the
// node's and spear directories if they have become empty. It returns an
// error if the run's directories could not all be removed.
func (g *runCgroup) destroy() error {
	deadline := time.Now().Add(cgroupRemoveTimeout)
	for {
		g.killAll()
		err := g.remove()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process: removing cgroup: %w: %w", errdefs.ErrInternal, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// remove removes the run's directories (keeping in g.dirs those that could
// not be) and the parents that are empty.
func (g *runCgroup) remove() error {
	var left []string
	var errs []error
	for _, d := range g.dirs {
		if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) {
			left = append(left, d)
			errs = append(errs, fmt.Errorf("%s: %w", d, err))
			continue
		}
		removeParents(filepath.Dir(d))
	}
	g.dirs = left
	return errors.Join(errs...)
}

// removeParents removes node dir and its spear parent if they are empty.
// A run starting at the same time recreates them.
func removeParents(node string) {
	if err := unix.Rmdir(node); err == nil || errors.Is(err, unix.ENOENT) {
		_ = unix.Rmdir(filepath.Dir(node))
	}
}

// reconcile kills the processes of this node's runs (those guard allows)
// left in the run cgroups of this node by a node that died, and removes
// those cgroups. A cgroup that still holds other processes stays, and is
// named in err; so does the fork server's shared cgroup, where a live
// node's thread may be. seen holds the pids killed already (they may be
// exiting); reconcile adds those it kills, and returns them.
func (c *cgroups) reconcile(guard *killGuard, seen map[int]bool) (killed []int, removed int, err error) {
	var errs []error
	for _, h := range c.hierarchies() {
		ents, err := os.ReadDir(h)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return killed, removed, err
		}
		for _, e := range ents {
			if !e.IsDir() {
				continue
			}
			d := filepath.Join(h, e.Name())
			if e.Name() == sharedCgroup {
				k, _ := killRunProcesses(d, guard, seen)
				killed = append(killed, k...)
				continue
			}
			k, err := c.reapRunCgroup(d, guard, seen)
			killed = append(killed, k...)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			removed++
		}
	}
	return killed, removed, errors.Join(errs...)
}

// reapRunCgroup kills what guard allows in the run cgroup dir and removes
// it, retrying until it is empty (bounded by cgroupRemoveTimeout: what was
// killed takes a moment to leave). A cgroup that still holds a process
// guard does not allow then stays.
func (c *cgroups) reapRunCgroup(dir string, guard *killGuard, seen map[int]bool) (killed []int, err error) {
	g := &runCgroup{c: c, dirs: []string{dir}}
	deadline := time.Now().Add(cgroupRemoveTimeout)
	for {
		k, foreign := killRunProcesses(dir, guard, seen)
		killed = append(killed, k...)
		err := g.remove()
		switch {
		case err == nil:
			return killed, nil
		case !time.Now().After(deadline):
			time.Sleep(5 * time.Millisecond)
		case len(foreign) > 0:
			return killed, fmt.Errorf("process: cgroup %s left in place: it holds processes %v, not of this node's runs: %w",
				dir, foreign, errdefs.ErrFailedPrecondition)
		default:
			return killed, fmt.Errorf("process: removing cgroup: %w: %w", errdefs.ErrInternal, err)
		}
	}
}

// killRunProcesses sends SIGKILL to the processes in cgroup dir that guard
// allows and that are not in seen (killed already) and adds them to seen.
// It returns them, and the processes it may not kill.
func killRunProcesses(dir string, guard *killGuard, seen map[int]bool) (killed, foreign []int) {
	for _, pid := range readPids(filepath.Join(dir, "cgroup.procs")) {
		switch {
		case seen[pid]:
		case guard.mayKill(pid):
			seen[pid] = true
			_ = unix.Kill(pid, unix.SIGKILL)
			killed = append(killed, pid)
		default:
			foreign = append(foreign, pid)
		}
	}
	return killed, foreign
}

// selfCgroups returns the node's own cgroup path per v1 controller, and
// under "" its v2 path.
func selfCgroups() (map[string]string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for line := range strings.Lines(string(b)) {
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			m[""] = parts[2]
			continue
		}
		for _, ctrl := range strings.Split(parts[1], ",") {
			m[ctrl] = parts[2]
		}
	}
	return m, nil
}

// sanitizeCgroupName maps s to a safe directory name: letters, digits, '.',
// '_' and '-' only, not starting with '.', at most 128 bytes.
func sanitizeCgroupName(s string) string {
	b := []byte(s)
	if len(b) > 128 {
		b = b[:128]
	}
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			b[i] = '_'
		}
	}
	if len(b) > 0 && b[0] == '.' {
		b[0] = '_'
	}
	return string(b)
}

// writeCgroupFile writes s to an existing cgroup control file.
func writeCgroupFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(s)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// readCgroupInt reads a control file holding one integer ("max" is
// reported as an error).
func readCgroupInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
}

// readKeyed reads a control file of "key value" lines; unreadable files
// and values read as nothing.
func readKeyed(path string) map[string]int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return map[string]int64{}
	}
	return parseKeyed(b)
}

// parseKeyed parses the "key value" lines of a cgroup file.
func parseKeyed(b []byte) map[string]int64 {
	m := map[string]int64{}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
			m[k] = n
		}
	}
	return m
}

// readPids reads a cgroup.procs file.
func readPids(path string) []int {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var pids []int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if pid, err := strconv.Atoi(strings.TrimSpace(sc.Text())); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// populated reports whether v2 cgroup dir has processes.
func populated(dir string) bool {
	return readKeyed(filepath.Join(dir, "cgroup.events"))["populated"] != 0
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
