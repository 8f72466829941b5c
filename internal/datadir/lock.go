// Package datadir makes a node's data directory belong to one node at a
// time. A node takes an exclusive flock(2) on <dir>/LOCK before it touches
// anything else in the directory and writes its pid into the file; a second
// node on the same directory is refused with an error naming that pid.
//
// The lock belongs to the open file, not to the file's contents: the kernel
// drops it when the holder closes the file or dies, however it dies, so a
// LOCK file left by a node killed with SIGKILL does not block the next one.
// The file is opened close-on-exec, so processes the node starts never hold
// the lock.
package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spear-go/spear/internal/errdefs"
)

// LockFile is the name of the lock file in a data directory.
const LockFile = "LOCK"

// holderReadTries and holderReadPause bound how long a refused node waits
// for the holder's pid to appear in the file: the holder writes it just
// after it has taken the lock.
const (
	holderReadTries = 20
	holderReadPause = 10 * time.Millisecond
)

// Lock is a held lock on a data directory.
type Lock struct {
	f *os.File
}

// InUseError is returned by Acquire when another process holds the
// directory. It wraps errdefs.ErrFailedPrecondition.
type InUseError struct {
	Dir string
	// PID is the holder's pid as it wrote it in the lock file; 0 when
	// unknown.
	PID int
}

func (e *InUseError) Error() string {
	holder := "another spear node"
	if e.PID > 0 {
		holder = "spear node pid " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("data dir %s is in use by %s: stop it or use another --data-dir", e.Dir, holder)
}

func (e *InUseError) Unwrap() error { return errdefs.ErrFailedPrecondition }

// Acquire takes the lock of data directory dir, which must exist, and
// writes this process's pid into it. It fails at once with an *InUseError
// when another holder has it (another process, or another Acquire in this
// one). Other failures wrap errdefs.ErrInternal.
func Acquire(dir string) (*Lock, error) {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("data dir lock: %w: %w", errdefs.ErrInternal, err)
	}
	if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &InUseError{Dir: dir, PID: readHolder(path)}
		}
		return nil, fmt.Errorf("data dir lock %s: %w: %w", path, errdefs.ErrInternal, err)
	}
	if err := writePID(f); err != nil {
		_ = f.Close() // drops the lock
		return nil, fmt.Errorf("data dir lock %s: %w: %w", path, errdefs.ErrInternal, err)
	}
	return &Lock{f: f}, nil
}

// Release empties the lock file and gives the lock up. It is safe to call
// more than once and on a nil *Lock.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	f := l.f
	l.f = nil
	// Emptied while still held, so a new holder's pid is never erased.
	terr := f.Truncate(0)
	uerr := flock(f, unix.LOCK_UN)
	cerr := f.Close()
	return errors.Join(terr, uerr, cerr)
}

// flock is flock(2) on f, retried when interrupted by a signal.
func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// writePID replaces the contents of f with this process's pid.
func writePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return err
}

// readHolder returns the pid written in the lock file at path, waiting a
// little for a holder that has just taken the lock to write it; 0 when
// there is none.
func readHolder(path string) int {
	for range holderReadTries {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			return pid
		}
		time.Sleep(holderReadPause)
	}
	return 0
}
