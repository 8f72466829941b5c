package process

import "time"

// SetCgroupHook makes r call f with the directories of each run's cgroup
// once the child is in it.
func SetCgroupHook(r *Runtime, f func(dirs []string)) { r.cgroupHook = f }

// CgroupControllers reports which cgroup controllers r's runs get.
func CgroupControllers(r *Runtime) (pids, memory bool) {
	if r.cgroups == nil {
		return false, false
	}
	return r.cgroups.pids != "", r.cgroups.memory != ""
}

// SmallInput and SmallInputMax expose the inline stdin rule.
var SmallInput = smallInput

const SmallInputMax = smallInputMax

// MayKill and MayKillGroup ask a guard of Reconcile for node nodeID, made
// now, whether it may kill process pid or process group pgid.
func MayKill(nodeID string, pid int) bool { return newKillGuard(nodeID).mayKill(pid) }

func MayKillGroup(nodeID string, pgid int) bool { return newKillGuard(nodeID).mayKillGroup(pgid) }

// MarkedAsRun exposes the run marker test of Reconcile.
var MarkedAsRun = markedAsRun

// NodePidsCgroup creates, if needed, and returns r's node directory in the
// pids hierarchy; "" when r has none.
func NodePidsCgroup(r *Runtime) (string, error) {
	if r.cgroups == nil || r.cgroups.pids == "" {
		return "", nil
	}
	return r.cgroups.pids, r.cgroups.ensureParents(r.cgroups.pids)
}

// SetSpareTTL sets how long r's spares wait to be taken (and how soon a
// kind of invocation must be called again to count as busy).
func SetSpareTTL(r *Runtime, d time.Duration) { r.spares.ttl = d }

// SetsRlimits reports whether r's sandbox sets the rlimits of its runs.
func SetsRlimits(r *Runtime) bool { return r.sb != nil && r.sb.rlimits }

// Exited reports whether child pid, not reaped yet, has exited.
var Exited = exited

// SetSpareStartHook makes r's spares call f as they start.
func SetSpareStartHook(r *Runtime, f func()) { r.spares.startHook = f }
