package wasm

import (
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/runtime"
)

// buildProbe builds testdata/probe for wasip1 and returns its artifact.
func buildProbe(t *testing.T) runtime.Artifact {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go tool not found: %v", err)
	}
	out := filepath.Join(t.TempDir(), "probe.wasm")
	cmd := exec.Command(gobin, "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./testdata/probe")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the wasip1 probe: %v\n%s", err, b)
	}
	return runtime.Artifact{TaskID: "task-probe", Type: runtime.TypeWasm, Location: out}
}

// TestSandbox: a guest's random bytes come from crypto/rand (two runs
// differ), its clock is the host's, and it reaches no host file — not by
// absolute path, not with "..", not through a link it makes — only its own
// scratch directory, which is gone after the run.
func TestSandbox(t *testing.T) {
	probe := buildProbe(t)
	scratch := t.TempDir()
	leftover := filepath.Join(scratch, scratchPrefix+"left-by-a-crash")
	if err := os.Mkdir(leftover, 0o700); err != nil {
		t.Fatal(err)
	}
	r := newRuntime(t, Options{ScratchDir: scratch})
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Errorf("a scratch directory left by an earlier run is still there (%v)", err)
	}
	probeRun := func(t *testing.T, env map[string]string) string {
		t.Helper()
		res, out, stderr, err := run(t, t.Context(), r, probe, "", "", func(inv *runtime.Invocation) { inv.Env = env })
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("probe %v: res %+v err %v stderr %q", env, res, err, stderr)
		}
		return strings.TrimSpace(out)
	}

	t.Run("Random", func(t *testing.T) {
		a, b := probeRun(t, map[string]string{"PROBE": "random"}), probeRun(t, map[string]string{"PROBE": "random"})
		if _, err := hex.DecodeString(a); err != nil || len(a) != 32 || a == b {
			t.Fatalf("two runs read %q and %q: want 16 random bytes each, different", a, b)
		}
	})

	t.Run("Clock", func(t *testing.T) {
		before := time.Now()
		ns, err := strconv.ParseInt(probeRun(t, map[string]string{"PROBE": "clock"}), 10, 64)
		after := time.Now()
		if err != nil {
			t.Fatal(err)
		}
		if got := time.Unix(0, ns); got.Before(before.Add(-time.Second)) || got.After(after.Add(time.Second)) {
			t.Fatalf("guest clock %v, host's between %v and %v", got, before, after)
		}
	})

	t.Run("ScratchMadeOnUse", func(t *testing.T) {
		// A run that touches no file makes no scratch directory: looked
		// at while the guest writes its output. (The C fixture touches
		// none; Go's wasip1 runtime looks at its preopens at start, so a
		// Go module always has one made.)
		var during []os.DirEntry
		out := &peekWriter{peek: func() { during, _ = os.ReadDir(scratch) }}
		res, _, stderr, err := run(t, t.Context(), r, fixture(t, "echo"), "", "hi", func(inv *runtime.Invocation) {
			inv.Stdout = out
		})
		if err != nil || res.ExitCode != 0 || !out.peeked {
			t.Fatalf("probe clock: res %+v err %v stderr %q peeked %v", res, err, stderr, out.peeked)
		}
		if len(during) != 0 {
			t.Fatalf("scratch base during a run without file access: %v, want empty", during)
		}
	})

	t.Run("Files", func(t *testing.T) {
		secret := filepath.Join(t.TempDir(), "secret")
		if err := os.WriteFile(secret, []byte("host secret"), 0o644); err != nil {
			t.Fatal(err)
		}
		out := probeRun(t, map[string]string{"PROBE": "files", "SECRET": secret})
		t.Logf("probe files:\n%s", out)
		if strings.Contains(out, "host secret") || strings.Contains(out, "READ") || strings.Contains(out, "root:x:0") || strings.Contains(out, "MADE") {
			t.Fatalf("the guest reached beyond its scratch directory:\n%s", out)
		}
		for _, want := range []string{"secret: refused", "secret-relative: refused", "passwd: refused",
			"symlink: refused", "symlink-inside: refused", "link: refused", "root: tmp\n", "tmp: mine"} {
			if !strings.Contains(out+"\n", want) {
				t.Errorf("probe output lacks %q:\n%s", want, out)
			}
		}
		entries, err := os.ReadDir(scratch)
		if err != nil || len(entries) != 0 {
			t.Errorf("scratch base after the runs: %v, %v; want empty", entries, err)
		}
	})
}

// peekWriter calls peek on its first write.
type peekWriter struct {
	peek   func()
	peeked bool
}

func (w *peekWriter) Write(p []byte) (int, error) {
	if !w.peeked {
		w.peeked = true
		w.peek()
	}
	return len(p), nil
}
