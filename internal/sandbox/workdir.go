package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
)

// WorkDirs creates the per-execution working directories of runs, under
// one root that the node owns and every slot uid may traverse (0711).
type WorkDirs struct {
	root string
	seq  atomic.Uint64
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

// Create makes a fresh directory for one run, named after its execution,
// owned by uid:uid (when uid >= 0) and private to it.
func (w *WorkDirs) Create(name string, uid int) (string, error) {
	dir := filepath.Join(w.root, name+"-"+strconv.FormatUint(w.seq.Add(1), 10))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("sandbox: work dir: %w", err)
	}
	if uid >= 0 {
		if err := os.Chown(dir, uid, uid); err != nil {
			_ = os.Remove(dir)
			return "", fmt.Errorf("sandbox: work dir: %w", err)
		}
	}
	return dir, nil
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
