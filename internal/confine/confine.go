// Package confine keeps the local files a task may name inside the node's
// artifact roots (--artifact-root).
//
// A location is an absolute path or a file:// URI. It is accepted only when
// the path, cleaned of "." and "..", lies inside a root as given, and when
// the file it names, with every symbolic link resolved, lies inside a root
// with its own symbolic links resolved. Relative paths name nothing on a node
// (its working directory is not a root) and are refused like paths outside
// every root; a NUL byte, raw or percent-encoded, makes a location invalid.
// The check is made when a task is registered and again before every run, so
// that a symbolic link swapped later is caught.
package confine

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/spear-go/spear/internal/errdefs"
)

// Roots are the directories local artifacts must lie in. The zero Roots
// has none: it refuses every local path.
type Roots struct {
	dirs []root
}

// root is one artifact root as given (absolute, cleaned) and with its
// symbolic links resolved.
type root struct {
	given, resolved string
}

// New returns the roots dirs; each must be an existing directory. Relative
// dirs are taken from the working directory now. Empty entries are skipped
// and duplicates kept once.
func New(dirs []string) (Roots, error) {
	var r Roots
	for _, d := range dirs {
		if strings.TrimSpace(d) == "" {
			continue
		}
		if strings.ContainsRune(d, 0) {
			return Roots{}, fmt.Errorf("artifact root %q: contains a NUL byte: %w", d, errdefs.ErrInvalidArgument)
		}
		abs, err := filepath.Abs(d)
		if err != nil {
			return Roots{}, fmt.Errorf("artifact root %q: %w: %w", d, errdefs.ErrInvalidArgument, err)
		}
		resolved, err := filepath.EvalSymlinks(abs)
		if err != nil {
			return Roots{}, fmt.Errorf("artifact root %s: %w: %w", abs, errdefs.ErrInvalidArgument, err)
		}
		if st, err := os.Stat(resolved); err != nil || !st.IsDir() {
			return Roots{}, fmt.Errorf("artifact root %s: not a directory: %w", abs, errdefs.ErrInvalidArgument)
		}
		if !r.has(abs) {
			r.dirs = append(r.dirs, root{given: abs, resolved: resolved})
		}
	}
	return r, nil
}

func (r Roots) has(given string) bool {
	for _, d := range r.dirs {
		if d.given == given {
			return true
		}
	}
	return false
}

// Dirs returns the roots as given (absolute).
func (r Roots) Dirs() []string {
	out := make([]string, len(r.dirs))
	for i, d := range r.dirs {
		out[i] = d.given
	}
	return out
}

// Path returns the cleaned absolute path of the file location loc names (an
// absolute path or a file:// URI), once it is known to lie inside a root.
// Errors: INVALID_ARTIFACT_LOCATION for a malformed location,
// ARTIFACT_OUTSIDE_ROOT for one outside every root, ARTIFACT_NOT_FOUND when
// nothing is there.
func (r Roots) Path(loc string) (string, error) {
	path, err := filePath(loc)
	if err != nil {
		return "", err
	}
	if !filepath.IsAbs(path) {
		return "", outside(loc, "a relative path names no file inside an artifact root; give the absolute path")
	}
	path = filepath.Clean(path)
	if err := r.Check(path); err != nil {
		return "", err
	}
	return path, nil
}

// Check checks that the file at the clean absolute path lies inside a root,
// with every symbolic link resolved. Nothing about the file system outside
// the roots is revealed: a path outside every root is refused before it is
// looked at.
func (r Roots) Check(path string) error {
	if strings.ContainsRune(path, 0) {
		return errdefs.InvalidArtifactLocation.New("location contains a NUL byte")
	}
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return outside(path, "not a clean absolute path")
	}
	if !r.holds(path, func(d root) string { return d.given }) && !r.holds(path, func(d root) string { return d.resolved }) {
		return outside(path, "")
	}
	resolved, err := filepath.EvalSymlinks(path)
	if errors.Is(err, fs.ErrNotExist) {
		return errdefs.ArtifactNotFound.New("artifact %s: no such file", path)
	}
	if err != nil {
		return errdefs.ArtifactNotFound.New("artifact %s: %v", path, err)
	}
	if !r.holds(resolved, func(d root) string { return d.resolved }) {
		return outside(path, "it resolves, through a symbolic link, to a file outside them")
	}
	return nil
}

// holds reports whether path lies inside one of the roots, each taken as
// dir(root).
func (r Roots) holds(path string, dir func(root) string) bool {
	for _, d := range r.dirs {
		if within(dir(d), path) {
			return true
		}
	}
	return false
}

// within reports whether the clean absolute path lies in (or is) the clean
// absolute directory dir.
func within(dir, path string) bool {
	if dir == string(filepath.Separator) {
		return true
	}
	return path == dir || strings.HasPrefix(path, dir+string(filepath.Separator))
}

// filePath returns the path a location names: the location itself, or the
// (decoded) path of a file:// URI.
func filePath(loc string) (string, error) {
	if strings.ContainsRune(loc, 0) {
		return "", errdefs.InvalidArtifactLocation.New("location %q contains a NUL byte", loc)
	}
	if !strings.HasPrefix(loc, "file:") {
		return loc, nil
	}
	u, err := url.Parse(loc)
	if err != nil || u.Opaque != "" || (u.Host != "" && u.Host != "localhost") || u.RawQuery != "" || u.Fragment != "" {
		return "", errdefs.InvalidArtifactLocation.New("location %q: want file:///absolute/path", loc)
	}
	if strings.ContainsRune(u.Path, 0) {
		return "", errdefs.InvalidArtifactLocation.New("location %q contains a NUL byte", loc)
	}
	if !filepath.IsAbs(u.Path) {
		return "", errdefs.InvalidArtifactLocation.New("location %q: want file:///absolute/path", loc)
	}
	return u.Path, nil
}

func outside(loc, why string) error {
	msg := fmt.Sprintf("location %q is outside the node's artifact roots (--artifact-root)", loc)
	if why != "" {
		msg += ": " + why
	}
	return errdefs.ArtifactOutsideRoot.New("%s; upload the artifact instead (spear task create --upload FILE), or ask the node's operator for a root", msg)
}
