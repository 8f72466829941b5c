package sandbox

// Landlock for the calling thread only (no TSYNC): the rest of the node is
// untouched, and every child the thread forks inherits the domain.

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Landlock access rights by ABI version.
const (
	llReadExec = unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_READ_DIR
	llWriteV1  = unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_REMOVE_DIR | unix.LANDLOCK_ACCESS_FS_REMOVE_FILE |
		unix.LANDLOCK_ACCESS_FS_MAKE_CHAR | unix.LANDLOCK_ACCESS_FS_MAKE_DIR | unix.LANDLOCK_ACCESS_FS_MAKE_REG |
		unix.LANDLOCK_ACCESS_FS_MAKE_SOCK | unix.LANDLOCK_ACCESS_FS_MAKE_FIFO | unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK |
		unix.LANDLOCK_ACCESS_FS_MAKE_SYM
	llRefer    = unix.LANDLOCK_ACCESS_FS_REFER    // ABI 2
	llTruncate = unix.LANDLOCK_ACCESS_FS_TRUNCATE // ABI 3
	llIoctlDev = unix.LANDLOCK_ACCESS_FS_IOCTL_DEV
)

// FSRules is a thread's file system policy: what may be read and executed,
// and where files may be written.
type FSRules struct {
	// ReadExec are trees that may be read and executed.
	ReadExec []string
	// Write are trees where anything may be done.
	Write []string
	// WriteFiles are single files that may be read and written
	// (device files such as /dev/null).
	WriteFiles []string
}

// SystemDirs are the trees every sandboxed function may read and execute,
// whatever its task: programs, libraries, configuration, devices and the
// kernel's views (a path that does not exist is skipped). Anything else a
// function reads must lie in its node's artifact roots.
func SystemDirs() []string {
	return []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
		"/etc", "/dev", "/proc", "/sys", "/run/systemd/resolve"}
}

// LandlockABI returns the kernel's Landlock ABI version, 0 and why when it
// has none (not built, not enabled at boot).
func LandlockABI() (int, error) {
	v, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if errno != 0 {
		return 0, fmt.Errorf("landlock: %w", errno)
	}
	return int(v), nil
}

// handled returns the access rights Landlock ABI abi knows.
func handled(abi int) uint64 {
	h := uint64(llReadExec | llWriteV1)
	if abi >= 2 {
		h |= llRefer
	}
	if abi >= 3 {
		h |= llTruncate
	}
	if abi >= 5 {
		h |= llIoctlDev
	}
	return h
}

// RestrictThread puts the calling thread, which must be locked to its
// goroutine for good, in a Landlock domain that allows only rules. Paths
// that do not exist are skipped.
func RestrictThread(rules FSRules) error {
	abi, err := LandlockABI()
	if err != nil {
		return err
	}
	all := handled(abi)
	attr := unix.LandlockRulesetAttr{Handled_access_fs: all}
	fd, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr), 0)
	if errno != 0 {
		return fmt.Errorf("landlock: creating a ruleset: %w", errno)
	}
	defer unix.Close(int(fd))
	fileRights := uint64(unix.LANDLOCK_ACCESS_FS_READ_FILE|unix.LANDLOCK_ACCESS_FS_WRITE_FILE) | (all & llTruncate) | (all & llIoctlDev)
	for _, r := range []struct {
		paths  []string
		access uint64
	}{
		{rules.ReadExec, llReadExec},
		{rules.Write, all},
		{rules.WriteFiles, fileRights},
	} {
		for _, p := range r.paths {
			if err := addRule(int(fd), p, r.access); err != nil {
				return err
			}
		}
	}
	if err := setNoNewPrivs(); err != nil {
		return err
	}
	if _, _, errno := unix.Syscall(unix.SYS_LANDLOCK_RESTRICT_SELF, fd, 0, 0); errno != 0 {
		return fmt.Errorf("landlock: restricting the thread: %w", errno)
	}
	return nil
}

// addRule allows access beneath path (a file: the rights that apply to
// files only).
func addRule(ruleset int, path string, access uint64) error {
	f, err := os.OpenFile(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("landlock: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && !fi.IsDir() {
		access &= uint64(unix.LANDLOCK_ACCESS_FS_EXECUTE|unix.LANDLOCK_ACCESS_FS_READ_FILE|unix.LANDLOCK_ACCESS_FS_WRITE_FILE) | llTruncate | llIoctlDev
	}
	attr := unix.LandlockPathBeneathAttr{Allowed_access: access, Parent_fd: int32(f.Fd())}
	_, _, errno := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, uintptr(ruleset), unix.LANDLOCK_RULE_PATH_BENEATH, uintptr(unsafe.Pointer(&attr)), 0, 0, 0)
	if errno != 0 {
		return fmt.Errorf("landlock: rule for %s: %w", path, errno)
	}
	return nil
}

// setNoNewPrivs sets the calling thread's no_new_privs bit: nothing it
// executes gains privileges (set-user-ID files, file capabilities).
func setNoNewPrivs() error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("sandbox: no_new_privs: %w", err)
	}
	return nil
}
