package process

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// Reconcile kills every process group left behind by an earlier run of this
// node (a node killed with SIGKILL cannot stop its functions): processes
// whose environment carries SPEAR_NODE_ID=<this node> and a
// SPEAR_EXECUTION_ID. It then kills those processes left in the run
// cgroups of this node (spear/<node-id>) and removes the cgroups that end
// up empty. It never kills the node itself, its ancestors or a process
// without that marker (see killGuard). Call it at start-up, before any
// function runs, holding the data dir (so no other live node has this
// node's id). It returns how many processes it found.
func (r *Runtime) Reconcile(ctx context.Context) (int, error) {
	if r.nodeID == "" {
		return 0, nil
	}
	guard := newKillGuard(r.nodeID)
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("process: reconcile: %w", err)
	}
	found := map[int]bool{}
	for _, e := range ents {
		if ctx.Err() != nil {
			return len(found), ctx.Err()
		}
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !guard.mayKill(pid) {
			continue
		}
		found[pid] = true
		if pgid, err := syscall.Getpgid(pid); err == nil && guard.mayKillGroup(pgid) {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
		r.log.Info("killed a process left by an earlier run of this node", "pid", pid)
	}
	if r.cgroups != nil {
		killed, removed, err := r.cgroups.reconcile(guard, found)
		for _, pid := range killed {
			r.log.Info("killed a process left in a cgroup by an earlier run of this node", "pid", pid)
		}
		if removed > 0 {
			r.log.Info("removed cgroups left by an earlier run of this node", "count", removed)
		}
		if err != nil {
			return len(found), fmt.Errorf("process: reconcile: removing cgroups: %w", err)
		}
	}
	return len(found), nil
}
