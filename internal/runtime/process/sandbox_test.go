package process_test

import (
	"context"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spear-go/spear/internal/runtime/conformance"
	"github.com/spear-go/spear/internal/runtime/process"
	"github.com/spear-go/spear/internal/sandbox"
)

// sandboxed returns a runtime with the sandbox on; the test needs root (as
// on CI): the levels it checks need it.
func sandboxed(t *testing.T, opts process.Options) *process.Runtime {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the sandbox's uid and network levels need root")
	}
	opts.Sandbox = sandbox.ModeAuto
	if opts.ReadRoots == nil {
		opts.ReadRoots = []string{os.TempDir()} // the scripts' dirs
	}
	rt := process.New(opts)
	t.Cleanup(func() { _ = rt.Close(context.Background()) })
	// The probes below are harmful outside the sandbox.
	for _, l := range rt.SandboxReport().Levels {
		if !fullHere(rt, l) {
			t.Fatalf("sandbox level %s: %s", l.Name, l)
		}
	}
	return rt
}

// fullHere reports whether level l is all a node can apply on this host:
// every feature, but the rlimits where the node lacks CAP_SYS_RESOURCE
// (a container's default capabilities), which it then reports missing.
func fullHere(rt *process.Runtime, l sandbox.Level) bool {
	if l.Name == "process" && !process.SetsRlimits(rt) {
		_, why := l.Missing[sandbox.FeatRlimits]
		return why && len(l.Missing) == 1 && !slices.Contains(l.On, sandbox.FeatRlimits)
	}
	return l.Full()
}

func TestConformanceSandboxed(t *testing.T) {
	dir := t.TempDir()
	bin := conformance.BuildFixture(t, dir)
	conformance.Run(t, sandboxed(t, process.Options{}), ProcessFixtures(t, bin, dir))
}

// TestSandboxConfines runs one probe per sandbox feature and checks what
// the function could do, and what the run reports it got.
func TestSandboxConfines(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	outside := worldReadable(t)
	for _, tc := range []struct {
		name, body, want string
		host             bool
	}{
		{"not root", "id -u", "!0\n", false},
		{"cannot write /etc", "echo x > /etc/spear-sandbox-test && echo wrote || echo denied", "denied\n", false},
		{"cannot write /tmp", "echo x > /tmp/spear-sandbox-test-$$ && echo wrote || echo denied", "denied\n", false},
		{"writes its work dir", "echo x > \"$PWD/f\" && [ \"$HOME\" = \"$PWD\" ] && echo ok", "ok\n", false},
		{"cannot read /root", "ls /root >/dev/null 2>&1 && echo read || echo denied", "denied\n", false},
		{"cannot read outside the roots", "cat " + outside + " 2>/dev/null || echo denied", "denied\n", false},
		{"reads system files", "grep -c ^root: /etc/passwd", "1\n", false},
		{"cannot mount", "[ -n \"$HOME\" ] && mount -t tmpfs none \"$HOME\" 2>/dev/null && echo mounted || echo denied", "denied\n", false},
		{"no host loopback", "(exec 3<>/dev/tcp/127.0.0.1/" + port + ") 2>/dev/null && echo connected || echo denied", "denied\n", false},
		{"host network when asked", "(exec 3<>/dev/tcp/127.0.0.1/" + port + ") 2>/dev/null && echo connected || echo denied", "connected\n", true},
		{"core limit", "ulimit -c", "0\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := sandboxed(t, process.Options{})
			rlimits := process.SetsRlimits(rt)
			if tc.name == "core limit" && !rlimits {
				t.Skip("the node cannot set rlimits here (no CAP_SYS_RESOURCE)")
			}
			in, stdout, stderr := inv(bashScript(t, tc.body), "", nil)
			in.HostNetwork = tc.host
			res, err := rt.Run(context.Background(), in)
			if err != nil || res.ExitCode != 0 {
				t.Fatalf("Run: %v, exit %d, stderr %q", err, res.ExitCode, stderr.String())
			}
			got := stdout.String()
			if w, ok := strings.CutPrefix(tc.want, "!"); ok {
				if got == w {
					t.Errorf("output %q, want anything else", got)
				}
			} else if got != tc.want {
				t.Errorf("output %q, want %q (stderr %q)", got, tc.want, stderr.String())
			}
			want := "process-group,env,workdir,rlimits,uid,no-new-privs,landlock,seccomp,cgroups,netns"
			if tc.host {
				want = strings.TrimSuffix(want, ",netns")
			}
			if !rlimits {
				want = strings.Replace(want, "rlimits,", "", 1)
			}
			if res.Sandbox != want {
				t.Errorf("Sandbox = %q, want %q", res.Sandbox, want)
			}
		})
	}
}

// worldReadable returns a file anyone may read, outside the temporary
// directory (the sandboxed runtimes' read root).
func worldReadable(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "spear-outside-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	path := dir + "/public"
	if err := os.WriteFile(path, []byte("public\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func bashScript(t *testing.T, body string) string {
	t.Helper()
	return script(t, "exec /bin/bash -c '"+strings.ReplaceAll(body, "'", `'\''`)+"'")
}

// TestSandboxReport: on this host (root, cgroup v1 like CI) every level is
// on (the rlimits where the node may set them).
func TestSandboxReport(t *testing.T) {
	rt := sandboxed(t, process.Options{})
	for _, l := range rt.SandboxReport().Levels {
		if !fullHere(rt, l) {
			t.Errorf("level %s: %s", l.Name, l)
		}
	}
	if got := process.New(process.Options{}).SandboxReport().Info()["sandbox"]; got != "off" {
		t.Errorf("sandbox off reports %q", got)
	}
}

// TestPidsLimitHit: a fork bomb under a pids limit ends with PidsLimitHit,
// and nothing is left under its uid.
func TestPidsLimitHit(t *testing.T) {
	for _, sb := range []bool{false, true} {
		t.Run("sandbox="+strconv.FormatBool(sb), func(t *testing.T) {
			var rt *process.Runtime
			if sb {
				rt = sandboxed(t, process.Options{})
			} else {
				rt = process.New(process.Options{})
				defer rt.Close(context.Background())
			}
			if pids, _ := process.CgroupControllers(rt); !pids {
				t.Skip("no pids cgroup")
			}
			in, _, _ := inv(script(t, "i=0; while [ $i -lt 100 ]; do sleep 5 & i=$((i+1)); done; wait"), "", nil)
			in.PidsLimit = 16
			res, err := rt.Run(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			if !res.PidsLimitHit {
				t.Errorf("PidsLimitHit false: %+v", res)
			}
		})
	}
}
