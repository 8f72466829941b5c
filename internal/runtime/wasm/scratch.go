package wasm

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/tetratelabs/wazero"
	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/sys"

	"github.com/spear-go/spear/internal/errdefs"
)

// scratchPrefix names the per-execution scratch directories under the
// scratch base.
const scratchPrefix = "run-"

// scratchFS is a guest's whole file system: its per-execution scratch
// directory, made under base on the guest's first file system call (most
// functions never make one) and removed by remove. wazero refuses paths
// that climb out with ".."; links are refused here, so that none can lead
// out (the host would follow a symbolic link anywhere, and a hard link
// could pin a file from elsewhere).
type scratchFS struct {
	base string

	mu  sync.Mutex
	dir string // "" until made
	fs  experimentalsys.FS
	err error
}

// get makes the scratch directory, with an empty tmp in it, on first use.
func (s *scratchFS) get() (experimentalsys.FS, experimentalsys.Errno) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fs == nil && s.err == nil {
		s.dir, s.err = os.MkdirTemp(s.base, scratchPrefix+"*")
		if s.err == nil {
			s.err = os.Mkdir(filepath.Join(s.dir, "tmp"), 0o700)
		}
		if s.err == nil {
			s.fs = sysfs.DirFS(s.dir)
		}
	}
	if s.err != nil {
		return nil, experimentalsys.EIO
	}
	return s.fs, 0
}

// remove removes the scratch directory, if it was made.
func (s *scratchFS) remove() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

// OpenFile implements experimentalsys.FS.
func (s *scratchFS) OpenFile(path string, flag experimentalsys.Oflag, perm fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	f, errno := s.get()
	if errno != 0 {
		return nil, errno
	}
	return f.OpenFile(path, flag, perm)
}

// Lstat implements experimentalsys.FS.
func (s *scratchFS) Lstat(path string) (sys.Stat_t, experimentalsys.Errno) {
	f, errno := s.get()
	if errno != 0 {
		return sys.Stat_t{}, errno
	}
	return f.Lstat(path)
}

// Stat implements experimentalsys.FS.
func (s *scratchFS) Stat(path string) (sys.Stat_t, experimentalsys.Errno) {
	f, errno := s.get()
	if errno != 0 {
		return sys.Stat_t{}, errno
	}
	return f.Stat(path)
}

// Readlink implements experimentalsys.FS.
func (s *scratchFS) Readlink(path string) (string, experimentalsys.Errno) {
	f, errno := s.get()
	if errno != 0 {
		return "", errno
	}
	return f.Readlink(path)
}

// Mkdir implements experimentalsys.FS.
func (s *scratchFS) Mkdir(path string, perm fs.FileMode) experimentalsys.Errno {
	return s.do(func(f experimentalsys.FS) experimentalsys.Errno { return f.Mkdir(path, perm) })
}

// Chmod implements experimentalsys.FS.
func (s *scratchFS) Chmod(path string, perm fs.FileMode) experimentalsys.Errno {
	return s.do(func(f experimentalsys.FS) experimentalsys.Errno { return f.Chmod(path, perm) })
}

// Rename implements experimentalsys.FS.
func (s *scratchFS) Rename(from, to string) experimentalsys.Errno {
	return s.do(func(f experimentalsys.FS) experimentalsys.Errno { return f.Rename(from, to) })
}

// Rmdir implements experimentalsys.FS.
func (s *scratchFS) Rmdir(path string) experimentalsys.Errno {
	return s.do(func(f experimentalsys.FS) experimentalsys.Errno { return f.Rmdir(path) })
}

// Unlink implements experimentalsys.FS.
func (s *scratchFS) Unlink(path string) experimentalsys.Errno {
	return s.do(func(f experimentalsys.FS) experimentalsys.Errno { return f.Unlink(path) })
}

// Utimens implements experimentalsys.FS.
func (s *scratchFS) Utimens(path string, atim, mtim int64) experimentalsys.Errno {
	return s.do(func(f experimentalsys.FS) experimentalsys.Errno { return f.Utimens(path, atim, mtim) })
}

// Symlink refuses: a link could lead out of the scratch directory.
func (s *scratchFS) Symlink(string, string) experimentalsys.Errno { return experimentalsys.EPERM }

// Link refuses, like Symlink.
func (s *scratchFS) Link(string, string) experimentalsys.Errno { return experimentalsys.EPERM }

func (s *scratchFS) do(op func(experimentalsys.FS) experimentalsys.Errno) experimentalsys.Errno {
	f, errno := s.get()
	if errno != 0 {
		return errno
	}
	return op(f)
}

// newScratch returns the file system configuration that mounts a fresh
// scratch directory under base as the guest's "/". remove must be called
// once the instance is closed.
func newScratch(base string) (cfg wazero.FSConfig, remove func()) {
	s := &scratchFS{base: base}
	return wazero.NewFSConfig().(sysfs.FSConfig).WithSysFSMount(s, "/"), s.remove
}

// prepareScratchBase creates base and removes the scratch directories an
// earlier run of the node left there (it died before removing them).
func prepareScratchBase(base string) error {
	if err := os.MkdirAll(base, 0o700); err != nil {
		return fmt.Errorf("wasm: scratch base %s: %w: %w", base, errdefs.ErrInvalidArgument, err)
	}
	entries, err := os.ReadDir(base)
	if err != nil {
		return fmt.Errorf("wasm: scratch base %s: %w: %w", base, errdefs.ErrInvalidArgument, err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), scratchPrefix) {
			_ = os.RemoveAll(filepath.Join(base, e.Name()))
		}
	}
	return nil
}
