package process

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
