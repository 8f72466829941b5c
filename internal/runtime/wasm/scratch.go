package wasm

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/tetratelabs/wazero"
	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"

	"github.com/spear-go/spear/internal/errdefs"
)

// scratchPrefix names the per-execution scratch directories under the
// scratch base.
const scratchPrefix = "run-"

// scratchFS is a guest's whole file system: its per-execution scratch
// directory. wazero refuses paths that climb out with ".."; links are
// refused here, so that none can lead out (the host would follow a
// symbolic link anywhere, and a hard link could pin a file from elsewhere).
type scratchFS struct {
	experimentalsys.FS
}

// Symlink refuses: a link could lead out of the scratch directory.
func (scratchFS) Symlink(string, string) experimentalsys.Errno { return experimentalsys.EPERM }

// Link refuses, like Symlink.
func (scratchFS) Link(string, string) experimentalsys.Errno { return experimentalsys.EPERM }

// newScratch creates a fresh scratch directory under base, with an empty
// tmp in it, and returns it and the file system configuration that mounts
// it as the guest's "/". remove must be called once the instance is
// closed.
func newScratch(base string) (cfg wazero.FSConfig, remove func(), err error) {
	dir, err := os.MkdirTemp(base, scratchPrefix+"*")
	if err != nil {
		return nil, nil, fmt.Errorf("wasm: scratch directory: %w: %w", errdefs.ErrUnavailable, err)
	}
	remove = func() { _ = os.RemoveAll(dir) }
	if err := os.Mkdir(filepath.Join(dir, "tmp"), 0o700); err != nil {
		remove()
		return nil, nil, fmt.Errorf("wasm: scratch directory: %w: %w", errdefs.ErrUnavailable, err)
	}
	fsc := wazero.NewFSConfig().(sysfs.FSConfig).WithSysFSMount(scratchFS{sysfs.DirFS(dir)}, "/")
	return fsc, remove, nil
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
