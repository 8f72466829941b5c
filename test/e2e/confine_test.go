package e2e

import (
	"bytes"
	"errors"
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

// TestArtifactConfinement: a task may name only files inside the node's
// artifact roots. /bin/sh, ../../bin/sh and a symbolic link out of a root
// are refused with PERMISSION_DENIED / ARTIFACT_OUTSIDE_ROOT over gRPC,
// grpcurl and the CLI (exit 4, not allowed), and no task is created; an upload of the
// same bytes is allowed; a link that leaves the root after registration is
// refused before the next run.
func TestArtifactConfinement(t *testing.T) {
	dir, elsewhere := t.TempDir(), t.TempDir()
	n := startNode(t, "", nodeOpts{roots: []string{dir}, noSamples: true})
	linkOut := filepath.Join(dir, "sh-link")
	if err := os.Symlink("/bin/sh", linkOut); err != nil {
		t.Fatal(err)
	}
	outside := map[string]string{
		"absolute":     "/bin/sh",
		"dot-dot":      "../../bin/sh",
		"file-uri":     "file:///bin/sh",
		"escape":       dir + "/../../../../../../bin/sh",
		"symlink-out":  linkOut,
		"encoded-uri":  "file://" + dir + "/%2E%2E/%2E%2E/%2E%2E/%2E%2E/%2E%2E/bin/sh",
		"dir-link-out": dirLinkOut(t, dir) + "/sh",
	}

	t.Run("grpc", func(t *testing.T) {
		for name, loc := range outside {
			t.Run(name, func(t *testing.T) {
				var tr metadata.MD
				_, err := n.client.RegisterTask(ctx(t, callTimeout), &pb.RegisterTaskRequest{
					TaskId:       "e2e-outside-" + name,
					ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: loc},
				}, grpc.Trailer(&tr))
				e := asRPCError(t, err, tr)
				if e.code != codes.PermissionDenied || e.reason != "ARTIFACT_OUTSIDE_ROOT" || e.trailer != "ARTIFACT_OUTSIDE_ROOT" {
					t.Fatalf("RegisterTask(%q): %+v; want PermissionDenied / ARTIFACT_OUTSIDE_ROOT", loc, e)
				}
				// Nor as a new task of an invocation.
				req := invocation(t, "", pb.ExecutionMode_EXECUTION_MODE_SYNC, []byte("id"))
				req.InvocationType, req.TaskId, req.CreateIfNotExists = pb.InvocationType_INVOCATION_TYPE_NEW_TASK, "e2e-outside-inv-"+name, true
				req.ArtifactSpec = &pb.ArtifactSpec{ArtifactType: "process", Location: loc}
				tr = nil
				resp, err := n.client.InvokeFunction(ctx(t, callTimeout), req, grpc.Trailer(&tr))
				if err == nil {
					t.Fatalf("InvokeFunction new task at %q: %v; want ARTIFACT_OUTSIDE_ROOT", loc, resp)
				}
				if e := asRPCError(t, err, tr); e.reason != "ARTIFACT_OUTSIDE_ROOT" {
					t.Fatalf("InvokeFunction new task at %q: %+v; want ARTIFACT_OUTSIDE_ROOT", loc, e)
				}
				for _, id := range []string{"e2e-outside-" + name, "e2e-outside-inv-" + name} {
					got, err := n.client.GetTask(ctx(t, callTimeout), &pb.GetTaskRequest{TaskId: id})
					if err != nil || got.GetFound() {
						t.Fatalf("GetTask(%s) after the refusal: %v, %v; want not found", id, got, err)
					}
				}
			})
		}
	})

	t.Run("grpcurl", func(t *testing.T) {
		bin := findTool(t, "grpcurl")
		cmd := exec.CommandContext(ctx(t, toolTimeout), bin, "-plaintext", "-v",
			"-import-path", filepath.Join(moduleRoot(), "api", "spearlet"), "-proto", "spearlet.proto",
			"-d", `{"taskId":"e2e-outside-grpcurl","artifactSpec":{"artifactType":"process","location":"/bin/sh"}}`,
			n.addr, "spearlet.FunctionService/RegisterTask")
		out, err := cmd.CombinedOutput()
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) || !bytes.Contains(out, []byte("PermissionDenied")) || !bytes.Contains(out, []byte("spear-error-code: ARTIFACT_OUTSIDE_ROOT")) {
			t.Fatalf("grpcurl RegisterTask /bin/sh: %v\n%s", err, out)
		}
	})

	t.Run("cli", func(t *testing.T) {
		for name, loc := range outside {
			t.Run(name, func(t *testing.T) {
				// Run from the root: the CLI makes ../../bin/sh absolute
				// from there, out of it.
				code, stdout, stderr := runSpear(t, n, dir,
					"task", "register", "e2e-cli-outside-"+name, "--type", "process", "--location", loc)
				if code != 4 || !strings.Contains(stderr, "ARTIFACT_OUTSIDE_ROOT") {
					t.Fatalf("spear task register --location %s: exit %d, want 4 (not allowed) with ARTIFACT_OUTSIDE_ROOT\nstdout: %s\nstderr: %s", loc, code, stdout, stderr)
				}
			})
		}
		// The same file uploaded is the node's own copy: allowed.
		code, stdout, stderr := runSpear(t, n, "", "task", "create", "e2e-cli-uploaded", "--type", "process", "--upload", "/bin/sh")
		if code != 0 {
			t.Fatalf("spear task create --upload /bin/sh: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
	})

	t.Run("link-swapped-after-registration", func(t *testing.T) {
		script, _ := writeScript(t, dir, "fn.sh", "echo confined\n")
		content, err := os.ReadFile(script)
		if err != nil {
			t.Fatal(err)
		}
		copied := filepath.Join(elsewhere, "fn.sh")
		if err := os.WriteFile(copied, content, 0o755); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(dir, "fn-link")
		if err := os.Symlink(script, link); err != nil {
			t.Fatal(err)
		}
		if _, err := n.client.RegisterTask(ctx(t, callTimeout), &pb.RegisterTaskRequest{
			TaskId: "e2e-linked", ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: link},
		}); err != nil {
			t.Fatal(err)
		}
		if resp := n.invoke(t, syncReq(t, "e2e-linked")); output(t, resp.GetResult().GetResult()) != "confined\n" {
			t.Fatalf("run inside the root: %v", resp)
		}
		// Same content, now outside: the pin alone would let it run.
		if err := os.Remove(link); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(copied, link); err != nil {
			t.Fatal(err)
		}
		var tr metadata.MD
		_, err = n.client.InvokeFunction(ctx(t, callTimeout), syncReq(t, "e2e-linked"), grpc.Trailer(&tr))
		if e := asRPCError(t, err, tr); e.code != codes.PermissionDenied || e.reason != "ARTIFACT_OUTSIDE_ROOT" {
			t.Fatalf("run after the link left the root: %+v; want PermissionDenied / ARTIFACT_OUTSIDE_ROOT", e)
		}
	})
}

// dirLinkOut makes, in dir, a link to /bin and returns its path.
func dirLinkOut(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "bin-link")
	if err := os.Symlink("/bin", p); err != nil {
		t.Fatal(err)
	}
	return p
}

// runSpear runs the spear CLI against n from dir ("": the test's) and
// returns its exit code and output.
func runSpear(t *testing.T, n *node, dir string, args ...string) (int, string, string) {
	t.Helper()
	return runSpearArgs(t, dir, append([]string{"--addr", n.addr}, args...)...)
}

// runSpearArgs runs the spear CLI with args (and no SPEAR_ variables) from
// dir and returns its exit code and output.
func runSpearArgs(t *testing.T, dir string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.CommandContext(ctx(t, toolTimeout), spearBin(t), args...)
	cmd.Dir = dir
	cmd.Env = withoutSpearEnv(os.Environ())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		return exitErr.ExitCode(), stdout.String(), stderr.String()
	case err != nil:
		t.Fatalf("running spear %s: %v", strings.Join(args, " "), err)
	}
	return 0, stdout.String(), stderr.String()
}

// syncReq is a sync invocation of task id with a small input.
func syncReq(t *testing.T, id string) *pb.InvokeFunctionRequest {
	t.Helper()
	return invocation(t, id, pb.ExecutionMode_EXECUTION_MODE_SYNC, []byte("x"))
}
