package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
)

// WorkDirs hands out runs' working directories, under one root that the
// node owns and every slot uid may traverse (0711). A run gets an empty
// directory of its own, owned by its uid and private to it (0700); when it
// ends, the directory is emptied and kept for another run. Making and
// removing a directory is a journaled metadata write that costs about
// 0.2 ms each on this kind of machine's ext4 (docs/RATIONALE.md), on every
// run's path; emptying an empty directory costs a directory read.
type WorkDirs struct {
	root string
	seq  atomic.Uint64
	mu   sync.Mutex
	free []string
}

// NewWorkDirs makes root (removing what an earlier node left in it).
func NewWorkDirs(root string) (*WorkDirs, error) {
	if err := os.RemoveAll(root); err != nil {
		return nil, fmt.Errorf("sandbox: clearing work dirs: %w", err)
	}
	if err := os.MkdirAll(root, 0o711); err != nil {
		return nil, fmt.Errorf("sandbox: work dirs: %w", err)
	}
	if err := os.Chmod(root, 0o711); err != nil {
		return nil, fmt.Errorf("sandbox: work dirs: %w", err)
	}
	return &WorkDirs{root: root}, nil
}

// Root is where the work dirs are.
func (w *WorkDirs) Root() string { return w.root }

// Take returns an empty directory for one run, owned by uid:uid (when
// uid >= 0) and private to it. Give it back when the run is over.
func (w *WorkDirs) Take(uid int) (string, error) {
	w.mu.Lock()
	var dir string
	if n := len(w.free); n > 0 {
		dir, w.free = w.free[n-1], w.free[:n-1]
	}
	w.mu.Unlock()
	if dir == "" {
		dir = filepath.Join(w.root, "run-"+strconv.FormatUint(w.seq.Add(1), 10))
		if err := os.Mkdir(dir, 0o700); err != nil {
			return "", fmt.Errorf("sandbox: work dir: %w", err)
		}
	}
	if uid >= 0 {
		if err := os.Chown(dir, uid, uid); err != nil {
			w.Give(dir)
			return "", fmt.Errorf("sandbox: work dir: %w", err)
		}
	}
	return dir, nil
}

// Give empties dir — whatever the run left there — and keeps it, owned by
// the node and private again, for another run; one it cannot restore is
// removed instead. Call it once nothing of the run is left (see Sweeper).
func (w *WorkDirs) Give(dir string) error {
	err := empty(dir)
	if err == nil {
		err = os.Chown(dir, os.Geteuid(), os.Getegid())
	}
	if err == nil {
		err = os.Chmod(dir, 0o700)
	}
	if err != nil {
		return errors.Join(err, os.RemoveAll(dir))
	}
	w.mu.Lock()
	w.free = append(w.free, dir)
	w.mu.Unlock()
	return nil
}

// empty removes what is in dir (links are removed, not followed).
func empty(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	names, err := d.Readdirnames(-1)
	_ = d.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
			return err
		}
	}
	return nil
}

// Traversable reports whether every directory from / down to dir lets
// others search it (so that a slot uid can reach a directory inside).
func Traversable(dir string) bool {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for d := abs; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == "/" {
			return true
		}
	}
}
