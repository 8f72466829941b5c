package sandbox

import (
	"errors"
	"fmt"
	"hash/fnv"
	goruntime "runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// DefaultSlots is how many runs of one node can hold a uid at once.
const DefaultSlots = 1024

// uidFloor and uidBlocks place the default uid ranges of nodes: above the
// ids distributions hand out, one block of DefaultSlots per node chosen by
// its id, so that nodes sharing a host do not share uids (a collision is
// possible; set the base explicitly when several nodes share a host).
const (
	uidFloor  = 1 << 20
	uidBlocks = 4096
)

// DefaultUIDBase returns the first uid of node nodeID's range.
func DefaultUIDBase(nodeID string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(nodeID))
	return uidFloor + int(h.Sum32()%uidBlocks)*DefaultSlots
}

// Slots hands out unprivileged uids (gid the same), one per run at once:
// runs of different slots cannot signal, trace or read each other's
// processes and files, nor the node's. A released slot is swept (every
// process left under its uid killed) before it is handed out again.
type Slots struct {
	base int
	mu   sync.Mutex
	cond *sync.Cond
	free []int
}

// NewSlots returns a pool of n uids from base on.
func NewSlots(base, n int) (*Slots, error) {
	if base <= 0 || n <= 0 {
		return nil, fmt.Errorf("sandbox: uid range %d+%d: want a positive base and size", base, n)
	}
	s := &Slots{base: base}
	s.cond = sync.NewCond(&s.mu)
	for i := n - 1; i >= 0; i-- {
		s.free = append(s.free, base+i)
	}
	return s, nil
}

// Acquire takes a free uid, waiting for one to be released.
func (s *Slots) Acquire() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.free) == 0 {
		s.cond.Wait()
	}
	uid := s.free[len(s.free)-1]
	s.free = s.free[:len(s.free)-1]
	return uid
}

// Free gives uid back. The caller has swept it (see KillUID): nothing of
// the run that held it is left.
func (s *Slots) Free(uid int) {
	s.mu.Lock()
	s.free = append(s.free, uid)
	s.mu.Unlock()
	s.cond.Signal()
}

// KillUID sends SIGKILL to every process whose real or saved uid is uid,
// until none is left. It does so from a thread of its own that takes uid
// as all of its uids (kill(-1) then reaches exactly those processes, never
// the node's) and ends with its goroutine.
func KillUID(uid int) error {
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, no longer root, ends with the
		// goroutine.
		goruntime.LockOSThread()
		done <- killAsUID(uid)
	}()
	return <-done
}

// killAsUID drops the calling thread's uids to uid and kills every process
// it may signal. One pass is enough: kill(-1) walks the process list under
// the lock fork takes to add a child, so a process forked while it walks
// is either seen or has a parent already killed, whose fork then fails. A
// second pass costs little and covers a kernel that behaves otherwise.
func killAsUID(uid int) error {
	// The raw syscall changes this thread only (Go's Setresuid would
	// change every thread of the node).
	if _, _, errno := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); errno != 0 {
		return fmt.Errorf("sandbox: sweeping uid %d: %w", uid, errno)
	}
	for range 2 {
		// ESRCH: none left. Zombies count as found until reaped.
		if err := unix.Kill(-1, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("sandbox: sweeping uid %d: %w", uid, err)
		}
	}
	return nil
}
