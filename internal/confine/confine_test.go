package confine

import (
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spear-go/spear/internal/errdefs"
)

// tree is a root with files, and symbolic links that stay in it or lead
// out of it, next to a directory outside it.
type tree struct {
	base, root, outside string
	roots               Roots
}

func newTree(tb testing.TB) tree {
	tb.Helper()
	base, err := filepath.EvalSymlinks(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tr := tree{base: base, root: filepath.Join(base, "root"), outside: filepath.Join(base, "outside")}
	for _, d := range []string{tr.root, filepath.Join(tr.root, "sub"), tr.outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	for _, f := range []string{filepath.Join(tr.root, "fn.sh"), filepath.Join(tr.root, "sub", "fn.sh"), filepath.Join(tr.outside, "secret")} {
		if err := os.WriteFile(f, []byte("#!/bin/sh\n"), 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	links := map[string]string{
		"link-in":      "fn.sh",
		"sub/link-up":  "../fn.sh",
		"link-out":     "../outside/secret",
		"dirlink-out":  "../outside",
		"abslink-out":  "/etc/passwd",
		"abslink-root": "/",
		"loop":         "loop",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(tr.root, name)); err != nil {
			tb.Fatal(err)
		}
	}
	// A root given through a symbolic link is resolved once, at New.
	if err := os.Symlink(tr.root, filepath.Join(base, "root-link")); err != nil {
		tb.Fatal(err)
	}
	if tr.roots, err = New([]string{filepath.Join(base, "root-link")}); err != nil {
		tb.Fatal(err)
	}
	return tr
}

func TestPath(t *testing.T) {
	tr := newTree(t)
	rl := filepath.Join(tr.base, "root-link")
	tests := []struct {
		name, loc, want, code string
	}{
		{"file in root", rl + "/fn.sh", rl + "/fn.sh", ""},
		{"file in a subdir", rl + "/sub/fn.sh", rl + "/sub/fn.sh", ""},
		{"root's real path", tr.root + "/fn.sh", tr.root + "/fn.sh", ""},
		{"dot segments inside", rl + "/sub/./../fn.sh", rl + "/fn.sh", ""},
		{"link inside the root", rl + "/link-in", rl + "/link-in", ""},
		{"link up, still inside", rl + "/sub/link-up", rl + "/sub/link-up", ""},
		{"file URI", "file://" + rl + "/fn.sh", rl + "/fn.sh", ""},
		{"file URI on localhost", "file://localhost" + rl + "/fn.sh", rl + "/fn.sh", ""},
		{"file URI, percent-encoded", "file://" + rl + "/f%6E.sh", rl + "/fn.sh", ""},

		{"absolute path elsewhere", "/bin/sh", "", "ARTIFACT_OUTSIDE_ROOT"},
		{"dot-dot out", rl + "/../outside/secret", "", "ARTIFACT_OUTSIDE_ROOT"},
		{"dot-dot far out", rl + "/../../../../../../bin/sh", "", "ARTIFACT_OUTSIDE_ROOT"},
		{"relative dot-dot", "../../bin/sh", "", "ARTIFACT_OUTSIDE_ROOT"},
		{"relative", "fn.sh", "", "ARTIFACT_OUTSIDE_ROOT"},
		{"link out", rl + "/link-out", "", "ARTIFACT_OUTSIDE_ROOT"},
		{"through a dir link out", rl + "/dirlink-out/secret", "", "ARTIFACT_OUTSIDE_ROOT"},
		{"absolute link out", rl + "/abslink-out", "", "ARTIFACT_OUTSIDE_ROOT"},
		{"link to /", rl + "/abslink-root/bin/sh", "", "ARTIFACT_OUTSIDE_ROOT"},
		{"file URI out", "file:///bin/sh", "", "ARTIFACT_OUTSIDE_ROOT"},
		{"file URI encoded dot-dot", "file://" + rl + "/%2E%2E/outside/secret", "", "ARTIFACT_OUTSIDE_ROOT"},
		{"file URI encoded slashes", "file://" + rl + "%2F..%2F..%2Fbin/sh", "", "ARTIFACT_OUTSIDE_ROOT"},
		{"prefix of the root's name", rl + "x/fn.sh", "", "ARTIFACT_OUTSIDE_ROOT"},
		{"upper-case scheme", "FILE:///bin/sh", "", "ARTIFACT_OUTSIDE_ROOT"},

		{"NUL byte", rl + "/fn.sh\x00/../../bin/sh", "", "INVALID_ARTIFACT_LOCATION"},
		{"encoded NUL byte", "file://" + rl + "/fn.sh%00", "", "INVALID_ARTIFACT_LOCATION"},
		{"file URI on another host", "file://example.com" + rl + "/fn.sh", "", "INVALID_ARTIFACT_LOCATION"},
		{"opaque file URI", "file:fn.sh", "", "INVALID_ARTIFACT_LOCATION"},
		{"file URI with a query", "file://" + rl + "/fn.sh?x=/bin/sh", "", "INVALID_ARTIFACT_LOCATION"},
		{"missing file inside", rl + "/absent", "", "ARTIFACT_NOT_FOUND"},
		{"link loop inside", rl + "/loop", "", "ARTIFACT_NOT_FOUND"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tr.roots.Path(tc.loc)
			if tc.code == "" {
				if err != nil || got != tc.want {
					t.Fatalf("Path(%q) = %q, %v; want %q", tc.loc, got, err, tc.want)
				}
				return
			}
			if err == nil || errdefs.CodeOf(err) != tc.code {
				t.Fatalf("Path(%q) = %q, %v (code %s); want %s", tc.loc, got, err, errdefs.CodeOf(err), tc.code)
			}
			if tc.code == "ARTIFACT_OUTSIDE_ROOT" && !errors.Is(err, errdefs.ErrPermissionDenied) {
				t.Errorf("error %v is not permission denied", err)
			}
		})
	}
}

// TestCheckAfterSwap: a link checked at registration that is later pointed
// out of the root fails the next check.
func TestCheckAfterSwap(t *testing.T) {
	tr := newTree(t)
	link := filepath.Join(tr.root, "swapped")
	if err := os.Symlink("fn.sh", link); err != nil {
		t.Fatal(err)
	}
	p, err := tr.roots.Path(link)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(tr.outside, "secret"), link); err != nil {
		t.Fatal(err)
	}
	if err := tr.roots.Check(p); errdefs.CodeOf(err) != "ARTIFACT_OUTSIDE_ROOT" {
		t.Fatalf("Check after the swap = %v, want ARTIFACT_OUTSIDE_ROOT", err)
	}
}

func TestNew(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		dirs []string
		ok   bool
		n    int
	}{
		{"none", nil, true, 0},
		{"empty entries skipped", []string{"", " "}, true, 0},
		{"duplicates kept once", []string{dir, dir + "/", dir + "/."}, true, 1},
		{"missing", []string{filepath.Join(dir, "absent")}, false, 0},
		{"a file", []string{file}, false, 0},
		{"NUL", []string{dir + "\x00"}, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(tc.dirs)
			if (err == nil) != tc.ok || len(r.Dirs()) != tc.n {
				t.Fatalf("New(%q) = %v, %v; want ok=%v with %d roots", tc.dirs, r.Dirs(), err, tc.ok, tc.n)
			}
			if err != nil && !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("error %v is not invalid argument", err)
			}
		})
	}
	var none Roots
	if _, err := none.Path("/bin/sh"); errdefs.CodeOf(err) != "ARTIFACT_OUTSIDE_ROOT" {
		t.Errorf("zero Roots: Path(/bin/sh) = %v, want ARTIFACT_OUTSIDE_ROOT", err)
	}
}

// FuzzPath: whatever the location, Path never panics, and a path it accepts
// lies, symbolic links resolved, inside the root.
func FuzzPath(f *testing.F) {
	tr := newTree(f)
	for _, s := range []string{
		"fn.sh", "sub/fn.sh", "link-in", "link-out", "dirlink-out/secret", "abslink-out",
		"abslink-root/etc/passwd", "../outside/secret", "sub/../../outside/secret", "./fn.sh",
		"fn.sh\x00", "%2E%2E/outside/secret", "..%2Foutside%2Fsecret", "sub/link-up", "loop",
		"/bin/sh", "//etc/passwd", "fn.sh?/../../x", "fn.sh#/../../x",
	} {
		for kind := range uint8(5) {
			f.Add(kind, s)
		}
	}
	rl := filepath.Join(tr.base, "root-link")
	realRoot := tr.root
	f.Fuzz(func(t *testing.T, kind uint8, rest string) {
		var loc string
		switch kind % 5 {
		case 0:
			loc = rl + "/" + rest
		case 1:
			loc = "file://" + rl + "/" + rest
		case 2:
			loc = "file://localhost" + realRoot + "/" + url.PathEscape(rest)
		case 3:
			loc = "file://" + rest
		default:
			loc = rest
		}
		p, err := tr.roots.Path(loc)
		if err != nil {
			if errdefs.CodeOf(err) == "INTERNAL" {
				t.Fatalf("Path(%q): error without a code: %v", loc, err)
			}
			return
		}
		resolved, err := filepath.EvalSymlinks(p)
		if err != nil {
			t.Fatalf("Path(%q) = %q, which does not resolve: %v", loc, p, err)
		}
		if !within(realRoot, resolved) || strings.Contains(p, "\x00") {
			t.Fatalf("Path(%q) = %q (resolves to %q): outside the root %s", loc, p, resolved, realRoot)
		}
		if !within(rl, p) && !within(realRoot, p) {
			t.Fatalf("Path(%q) = %q: not under the root as given", loc, p)
		}
	})
}
