package e2e

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// TestDataDirOneNode: a second `spear serve` on a data dir in use exits at
// once, non-zero, naming the running node's pid; the running node goes on
// serving. Once the running node is killed with SIGKILL, a new node starts
// on the dir (the kernel dropped the lock).
func TestDataDirOneNode(t *testing.T) {
	dataDir := t.TempDir()
	first := startNode(t, dataDir, nodeOpts{workers: 1})

	out, err := serveUntilExit(t, dataDir)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("second spear serve on %s: %v, want a non-zero exit; output:\n%s", dataDir, err, out)
	}
	want := fmt.Sprintf("is in use by spear node pid %d", first.cmd.Process.Pid)
	if !strings.Contains(out, want) || !strings.Contains(out, "--data-dir") {
		t.Errorf("second spear serve said:\n%s\nwant a message with %q and what to do", out, want)
	}
	if strings.Contains(out, "killed") {
		t.Errorf("the second node killed something:\n%s", out)
	}
	select {
	case <-first.exited:
		t.Fatalf("the running node exited: %v", first.waitErr)
	default:
	}
	first.checkServes(t)

	first.kill()
	next := startNode(t, dataDir, nodeOpts{workers: 1})
	next.checkServes(t)
}

// serveUntilExit runs `spear serve` on dataDir until it exits (bounded by
// readyTimeout, a hang guard) and returns its output.
func serveUntilExit(t *testing.T, dataDir string) (string, error) {
	c, cancel := context.WithTimeout(t.Context(), readyTimeout)
	defer cancel()
	cmd := exec.CommandContext(c, spearBin(t), "serve", "--data-dir", dataDir, "--listen", freeAddr(t), "--docker", "off")
	cmd.Env = withoutSpearEnv(cmd.Environ())
	out, err := cmd.CombinedOutput()
	if c.Err() != nil {
		t.Fatalf("spear serve on a data dir in use still ran after %v; output:\n%s", readyTimeout, out)
	}
	return string(out), err
}
