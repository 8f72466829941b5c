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

// Free gives uid back. The caller has swept it (see Sweeper): nothing of
// the run that held it is left.
func (s *Slots) Free(uid int) {
	s.mu.Lock()
	s.free = append(s.free, uid)
	s.mu.Unlock()
	s.cond.Signal()
}

// Sweeper kills what runs leave under their slot's uid, empties their
// work dirs and gives them back, and frees their slots, in that order, one
// after the other on a thread of its own, off the runs' path.
type Sweeper struct {
	slots *Slots
	dirs  *WorkDirs
	reqs  chan sweep
	done  chan struct{}
	log   func(msg string, args ...any)
}

type sweep struct {
	uid int // -1: none
	dir string
}

// NewSweeper starts the sweeper of slots (nil: work dirs only) and the
// work dirs of dirs; log receives what fails.
func NewSweeper(slots *Slots, dirs *WorkDirs, log func(msg string, args ...any)) *Sweeper {
	w := &Sweeper{slots: slots, dirs: dirs, reqs: make(chan sweep, DefaultSlots), done: make(chan struct{}), log: log}
	go w.loop()
	return w
}

// Release queues the sweep of uid (-1 for none) and the return of work
// dir dir ("" for none). It never blocks: at most one sweep per slot is queued.
func (w *Sweeper) Release(uid int, dir string) {
	w.reqs <- sweep{uid: uid, dir: dir}
}

// Close ends the sweeper once what is queued is done.
func (w *Sweeper) Close() {
	close(w.reqs)
	<-w.done
}

// loop runs the sweeps on a locked thread. A thread that could not go
// back to root ends with its goroutine, and another takes over.
func (w *Sweeper) loop() {
	// Never unlocked: the thread changes its uids (see killAsUID), so no
	// other goroutine may run on it.
	goruntime.LockOSThread()
	for s := range w.reqs {
		if w.run(s) {
			go w.loop()
			return
		}
	}
	close(w.done)
}

// run does one sweep and reports whether the thread is stuck with the
// slot's uid.
func (w *Sweeper) run(s sweep) (stuck bool) {
	if s.uid >= 0 {
		var err error
		if stuck, err = killAsUID(s.uid); err != nil {
			w.log("sandbox: sweeping a slot", "uid", s.uid, "err", err)
		}
	}
	if s.dir != "" && !stuck {
		if err := w.dirs.Give(s.dir); err != nil {
			w.log("sandbox: emptying a work dir", "dir", s.dir, "err", err)
		}
	}
	if s.uid >= 0 && w.slots != nil {
		w.slots.Free(s.uid)
	}
	return stuck
}

// killAsUID kills every process whose real or saved uid is uid, from the
// calling thread (locked to its goroutine for good): it takes uid as its
// real and effective uid, keeping root as its saved one, so that kill(-1)
// reaches exactly those processes (no capability, no match with root's),
// then goes back to root.
//
// One pass is enough: kill(-1) walks the process list under the lock fork
// takes to add a child, so a process forked while it walks is either seen
// or has a parent already killed, and fork checks for a pending fatal
// signal under that lock, so that fork fails. (A second pass cost 2.7% of
// the node's CPU at 32 concurrent process calls.)
func killAsUID(uid int) (stuck bool, err error) {
	// Raw syscalls change this thread only (Go's Setresuid would change
	// every thread of the node).
	if _, _, errno := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), 0); errno != 0 {
		return false, fmt.Errorf("sandbox: sweeping uid %d: %w", uid, errno)
	}
	// ESRCH: none left. Zombies count as found until reaped.
	if kerr := unix.Kill(-1, unix.SIGKILL); kerr != nil && !errors.Is(kerr, unix.ESRCH) {
		err = fmt.Errorf("sandbox: sweeping uid %d: %w", uid, kerr)
	}
	if _, _, errno := unix.RawSyscall(unix.SYS_SETRESUID, 0, 0, 0); errno != 0 {
		// The thread cannot go back: it must never run anything else.
		return true, errors.Join(err, fmt.Errorf("sandbox: the sweeper thread cannot return to root: %w", errno))
	}
	return false, err
}
