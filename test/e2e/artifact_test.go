package e2e

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	pb "github.com/spear-go/spear/api/spearlet"
)

// TestArtifactPinned: a registered script edited afterwards is not run —
// every mode answers ARTIFACT_CHANGED (FAILED_PRECONDITION) and the new
// script's marker never appears — until `spear task update` re-pins the
// task; then the new content runs.
func TestArtifactPinned(t *testing.T) {
	n := startNode(t, "", nodeOpts{noSamples: true})
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran-v2")
	path, _ := writeScript(t, dir, "pinned.sh", "echo v1\n")
	n.registerProcess(t, "e2e-pinned", path)
	if out := output(t, n.invoke(t, invocation(t, "e2e-pinned", modeSync, nil)).GetResult().GetResult()); out != "v1\n" {
		t.Fatalf("before the edit: output %q, want v1", out)
	}

	writeScript(t, dir, "pinned.sh", ": > '"+marker+"'\necho v2\n")
	for _, mode := range []pb.ExecutionMode{modeSync, modeAsync, pb.ExecutionMode_EXECUTION_MODE_STREAM} {
		t.Run(mode.String(), func(t *testing.T) {
			var trailer metadata.MD
			req := invocation(t, "e2e-pinned", mode, nil)
			var err error
			if mode == pb.ExecutionMode_EXECUTION_MODE_STREAM {
				err = streamError(t, n, req, &trailer)
			} else {
				_, err = n.client.InvokeFunction(ctx(t, callTimeout), req, grpc.Trailer(&trailer))
			}
			e := asRPCError(t, err, trailer)
			if e.code != codes.FailedPrecondition || e.reason != "ARTIFACT_CHANGED" || e.trailer != "ARTIFACT_CHANGED" ||
				!strings.Contains(e.msg, "spear task update e2e-pinned --location "+path) {
				t.Errorf("invoking the edited script: %+v, want FAILED_PRECONDITION ARTIFACT_CHANGED with the update hint", e)
			}
		})
	}
	if _, err := os.Stat(marker); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("marker %s: %v; the edited script ran", marker, err)
	}

	cmd := exec.CommandContext(ctx(t, toolTimeout), spearBin(t), "--addr", n.addr, "task", "update", "e2e-pinned", "--location", path)
	cmd.Env = withoutSpearEnv(os.Environ())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || !strings.Contains(stdout.String(), "updated task e2e-pinned") {
		t.Fatalf("spear task update: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	if out := output(t, n.invoke(t, invocation(t, "e2e-pinned", modeSync, nil)).GetResult().GetResult()); out != "v2\n" {
		t.Errorf("after the update: output %q, want v2", out)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("marker after the update: %v; the new script did not run", err)
	}
}

// TestArtifactReleasedOnDelete: deleting a wasm task that ran releases its
// compiled module, as spear_runtime_cached_artifacts shows.
func TestArtifactReleasedOnDelete(t *testing.T) {
	const cached = `spear_runtime_cached_artifacts{runtime="wasm"}`
	n := startNode(t, "", nodeOpts{noSamples: true})
	n.waitMetric(t, cached, 0, callTimeout)
	n.ctlRegister(t, &pb.RegisterTaskRequest{
		TaskId:       "e2e-wasm-doomed",
		ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "wasm", Location: wasmFixture("echo")},
	})
	resp := n.invoke(t, invocation(t, "e2e-wasm-doomed", modeSync, []byte("compiled")))
	if out := output(t, resp.GetResult().GetResult()); out != "compiled" {
		t.Fatalf("invoke: output %q (%s)", out, resp.GetMessage())
	}
	n.waitMetric(t, cached, 1, callTimeout)
	if _, err := n.client.DeleteTask(ctx(t, callTimeout), &pb.DeleteTaskRequest{TaskId: "e2e-wasm-doomed"}); err != nil {
		t.Fatal(err)
	}
	n.waitMetric(t, cached, 0, callTimeout)
}
