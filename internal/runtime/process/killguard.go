package process

// What Reconcile may kill. It runs at start-up to clean up after a node
// that died, and must not take down anything else: not the node itself,
// not what started it, and not another live process that happens to sit in
// a cgroup of this node's (a live node's fork-server thread, for one).

import (
	"bytes"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/spear-go/spear/internal/procstat"
)

// killGuard decides which processes Reconcile may kill: a process must
// carry this node's run marker (see markedAsRun) in the environment it was
// started with, and it must not be the node, one of its ancestors or
// (for a process group) the group of one of them.
type killGuard struct {
	nodeID string
	// protected are the node and its ancestors; protectedGroups are
	// their process groups.
	protected, protectedGroups map[int]bool
}

// newKillGuard returns the guard of node nodeID, protecting the calling
// process and its ancestors as they are now.
func newKillGuard(nodeID string) *killGuard {
	g := &killGuard{nodeID: nodeID, protected: map[int]bool{}, protectedGroups: map[int]bool{}}
	for pid := os.Getpid(); pid > 0 && !g.protected[pid]; pid, _ = procstat.ParentPID(pid) {
		g.protected[pid] = true
		if pgid, err := unix.Getpgid(pid); err == nil {
			g.protectedGroups[pgid] = true
		}
	}
	return g
}

// mayKill reports whether pid is demonstrably a process of one of this
// node's runs.
func (g *killGuard) mayKill(pid int) bool {
	if pid <= 1 || g.protected[pid] {
		return false
	}
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	return err == nil && markedAsRun(env, g.nodeID)
}

// mayKillGroup reports whether process group pgid, which holds a process
// mayKill allows, may be killed as a whole: it is not the group of the node
// or an ancestor, and its leader (a run's first process: each run gets a
// group of its own) is a run's process too, or has exited.
func (g *killGuard) mayKillGroup(pgid int) bool {
	if pgid <= 1 || g.protectedGroups[pgid] || g.protected[pgid] {
		return false
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(pgid)); os.IsNotExist(err) {
		return true
	}
	return g.mayKill(pgid)
}

// markedAsRun reports whether environ (as in /proc/<pid>/environ:
// NUL-separated KEY=value) is that of a process of one of node nodeID's
// runs: SPEAR_NODE_ID=nodeID and a SPEAR_EXECUTION_ID, as environ sets.
func markedAsRun(environ []byte, nodeID string) bool {
	if nodeID == "" {
		return false
	}
	var node, exec bool
	for kv := range bytes.SplitSeq(environ, []byte{0}) {
		k, v, _ := bytes.Cut(kv, []byte("="))
		switch string(k) {
		case EnvNodeID:
			node = string(v) == nodeID
		case EnvExecutionID:
			exec = len(v) > 0
		}
	}
	return node && exec
}
