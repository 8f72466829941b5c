package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
)

// racyWindow is how recently a file may have been modified for its stamp
// not to be trusted: file systems keep coarse timestamps, so a file written
// twice within one tick keeps its stamp (the "racily clean" case of git's
// index). A file modified this recently is hashed on every check.
const racyWindow = 2 * time.Second

// pin holds a local artifact to the content its task is pinned to. It
// remembers the file's stamp from when that content was last confirmed,
// so a check costs one stat and reads the file only when the stamp
// changed.
type pin struct {
	path   string
	digest string // "sha256:<hex>" the task is pinned to
	// refetch, when set, replaces a local copy that no longer has the
	// pinned content (an uploaded artifact's copy, refetched from the
	// store).
	refetch func(context.Context) error

	mu    sync.Mutex
	stamp fileStamp // zero: not confirmed (or not trusted); hash on check
}

// fileStamp tells a version of a file without reading it.
type fileStamp struct {
	size, mtime int64
	dev, ino    uint64
}

// stampOf returns fi's stamp, or the zero stamp when fi was modified too
// recently to be trusted.
func stampOf(fi os.FileInfo) fileStamp {
	if time.Since(fi.ModTime()) < racyWindow {
		return fileStamp{}
	}
	s := fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.dev, s.ino = uint64(st.Dev), st.Ino
	}
	return s
}

// pinFile pins the file at path to want, or to its content now when want
// is empty, and returns the pin and the digest of the content now (which
// the caller compares with want).
func pinFile(ctx context.Context, path, want string, refetch func(context.Context) error) (*pin, string, error) {
	p := &pin{path: path, digest: want, refetch: refetch}
	if want != "" {
		digest, err := p.check(ctx, nil)
		return p, digest, err
	}
	stamp, digest, err := readStamped(path)
	if err != nil {
		return nil, "", err
	}
	p.digest, p.stamp = digest, stamp
	return p, digest, nil
}

// check returns the digest of the file's content now: p.digest when it is
// unchanged. A file that changed is first refetched, if p can. changed,
// if set, is called before a file whose stamp changed is read; its error
// ends the check.
func (p *pin) check(ctx context.Context, changed func() error) (string, error) {
	// Stat before the lock: concurrent calls of a task do not queue for
	// the syscall, and a stamp seen before another call stored a newer one
	// only sends this call down the slow path.
	fi, err := os.Stat(p.path)
	if err != nil {
		return "", errdefs.ArtifactNotFound.New("artifact %s: %v", p.path, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if s := stampOf(fi); s != (fileStamp{}) && s == p.stamp {
		return p.digest, nil
	}
	if changed != nil {
		if err := changed(); err != nil {
			return "", err
		}
	}
	stamp, digest, err := readStamped(p.path)
	if err == nil && !p.matches(digest) && p.refetch != nil {
		if err = p.refetch(ctx); err == nil {
			stamp, digest, err = readStamped(p.path)
		}
	}
	if err != nil {
		return "", err
	}
	p.stamp = fileStamp{}
	if p.matches(digest) {
		p.stamp = stamp
	}
	return digest, nil
}

func (p *pin) matches(digest string) bool { return strings.EqualFold(digest, p.digest) }

// readStamped hashes the file at path and returns its stamp from before it
// was read: a change while it is read shows in the next stamp.
func readStamped(path string) (fileStamp, string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, "", errdefs.ArtifactNotFound.New("artifact %s: %v", path, err)
	}
	digest, err := fileDigest(path)
	return stampOf(fi), digest, err
}

func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", errdefs.ArtifactNotFound.New("artifact %s: %v", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", errdefs.ArtifactUnreadable.New("artifact %s: %v", path, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}
