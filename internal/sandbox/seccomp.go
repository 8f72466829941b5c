package sandbox

// A seccomp deny-list for the calling thread only (no TSYNC), inherited by
// every child it forks: the syscalls a function has no business making
// fail with EPERM.

import (
	"fmt"

	seccomp "github.com/elastic/go-seccomp-bpf"
)

// DeniedSyscalls are refused (EPERM) to sandboxed functions: mounting and
// namespaces, tracing other processes, loading code into the kernel,
// rebooting, the clock, kernel keyrings, and other kernel-wide switches.
var DeniedSyscalls = []string{
	"mount", "umount2", "pivot_root", "chroot", "mount_setattr", "move_mount", "open_tree",
	"fsopen", "fsconfig", "fsmount", "fspick",
	"unshare", "setns",
	"ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
	"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
	"bpf", "perf_event_open", "userfaultfd",
	"reboot", "swapon", "swapoff", "acct", "quotactl",
	"settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
	"keyctl", "add_key", "request_key",
	"open_by_handle_at", "name_to_handle_at",
	"iopl", "ioperm", "syslog", "sethostname", "setdomainname", "uselib",
}

// denyPolicy is DeniedSyscalls as a policy that allows everything else.
func denyPolicy() seccomp.Policy {
	return seccomp.Policy{
		DefaultAction: seccomp.ActionAllow,
		Syscalls:      []seccomp.SyscallGroup{{Names: DeniedSyscalls, Action: seccomp.ActionErrno}},
	}
}

// CheckSeccomp reports whether the deny-list can be assembled for this
// architecture (it cannot be loaded where seccomp is not built).
func CheckSeccomp() error {
	if !seccomp.Supported() {
		return fmt.Errorf("seccomp: not supported by the kernel")
	}
	p := denyPolicy()
	if _, err := p.Assemble(); err != nil {
		return fmt.Errorf("seccomp: %w", err)
	}
	return nil
}

// DenySyscalls sets no_new_privs on the calling thread, which must be
// locked to its goroutine for good, and loads the deny-list on it alone.
func DenySyscalls() error {
	err := seccomp.LoadFilter(seccomp.Filter{NoNewPrivs: true, Policy: denyPolicy()})
	if err != nil {
		return fmt.Errorf("seccomp: %w", err)
	}
	return nil
}
