package sandbox

// A network namespace with only the loopback interface, up: functions in
// it reach nothing outside it, the host's own loopback listeners included.

import (
	"fmt"
	"os"
	goruntime "runtime"

	"golang.org/x/sys/unix"
)

// NewLoopbackNetNS creates a network namespace whose only interface, lo,
// is up, and returns a handle on it for JoinNetNS. It needs CAP_SYS_ADMIN.
// The thread that creates it is discarded (it is left in the namespace).
func NewLoopbackNetNS() (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// Never unlocked: the thread ends with this goroutine instead of
		// running others inside the namespace.
		goruntime.LockOSThread()
		f, err := enterNewNetNS()
		ch <- result{f, err}
	}()
	r := <-ch
	return r.f, r.err
}

// enterNewNetNS moves the calling (locked) thread into a new network
// namespace, brings its lo up and returns the namespace.
func enterNewNetNS() (*os.File, error) {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("sandbox: new network namespace: %w", err)
	}
	f, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return nil, fmt.Errorf("sandbox: network namespace handle: %w", err)
	}
	if err := loopbackUp(); err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

// loopbackUp sets the IFF_UP flag of lo in the calling thread's network
// namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sandbox: loopback: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("sandbox: loopback: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("sandbox: loopback flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("sandbox: bringing lo up: %w", err)
	}
	return nil
}

// JoinNetNS moves the calling thread, which must be locked to its
// goroutine for good, into network namespace ns.
func JoinNetNS(ns *os.File) error {
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("sandbox: joining the network namespace: %w", err)
	}
	return nil
}
