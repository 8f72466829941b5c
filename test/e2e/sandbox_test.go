package e2e

import (
	"bufio"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/spear-go/spear/api/spearlet"
)

// allSandboxFeatures is what a run on a root, cgroup-capable host (CI)
// gets: rlimits too where the node may set another uid's (a container's
// default capabilities lack CAP_SYS_RESOURCE, and the node says so).
func allSandboxFeatures() string {
	if !capSysResource() {
		return "process-group,env,workdir,uid,no-new-privs,landlock,seccomp,cgroups,netns"
	}
	return "process-group,env,workdir,rlimits,uid,no-new-privs,landlock,seccomp,cgroups,netns"
}

// capSysResource reports whether this process (root, as the nodes it
// starts) has CAP_SYS_RESOURCE in its effective set.
func capSysResource() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<24) != 0
		}
	}
	return false
}

// requireFullSandbox fails the test unless the node reports every sandbox
// level on: the probes that follow would do harm outside it, and CI (root,
// cgroup v1) has them all.
func requireFullSandbox(t *testing.T, n *node) {
	t.Helper()
	h, err := n.client.GetHealth(ctx(t, callTimeout), &pb.GetHealthRequest{IncludeDetails: true})
	if err != nil {
		t.Fatal(err)
	}
	info := h.GetDetails().GetSystemInfo()
	full := "auto: process,privileges,cgroups,network"
	for _, level := range []string{"process", "privileges", "cgroups", "network"} {
		v := info["sandbox."+level]
		if level == "process" && !capSysResource() {
			// Everything but the rlimits, which the node says it cannot set.
			if !strings.HasPrefix(v, "partial (process-group, env, workdir); rlimits unavailable: ") {
				t.Fatalf("sandbox level process without CAP_SYS_RESOURCE: %q", v)
			}
			full = "auto: privileges,cgroups,network"
			continue
		}
		if !strings.HasPrefix(v, "on (") {
			t.Fatalf("sandbox level %s: %q (system_info %v)", level, v, info)
		}
	}
	if v := info["sandbox"]; v != full {
		t.Fatalf("sandbox %q, want %q", v, full)
	}
}

// TestSandboxContainsFunction: a process function that tries to act as
// root, write /etc, read /root or a world-readable file outside the
// artifact roots, reach a listener on the host's loopback
// and mount runs as an unprivileged uid and is denied each; the node stays
// healthy and reports all four sandbox levels, in GetHealth, `spear
// health` and the execution.
func TestSandboxContainsFunction(t *testing.T) {
	n := startNode(t, "", nodeOpts{sandbox: "auto"})
	requireFullSandbox(t, n)
	health := string(runCLI(t, n, "health"))
	for _, level := range []string{"sandbox.process", "sandbox.privileges", "sandbox.cgroups", "sandbox.network"} {
		if !strings.Contains(health, level) {
			t.Errorf("spear health does not show %s:\n%s", level, health)
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			_ = c.Close()
		}
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	outside := worldReadableOutsideRoots(t)
	const etcFile = "/etc/spear-test"
	t.Cleanup(func() { _ = os.Remove(etcFile) })
	body := `exec /bin/bash -c '
echo "uid=$(id -u)"
if echo x > ` + etcFile + ` 2>/dev/null; then echo "etc=written"; else echo "etc=denied"; fi
if ls /root >/dev/null 2>&1; then echo "root=read"; else echo "root=denied"; fi
if cat ` + outside + ` >/dev/null 2>&1; then echo "outside=read"; else echo "outside=denied"; fi
if grep -q ^root: /etc/passwd; then echo "system=read"; else echo "system=denied"; fi
if (exec 3<>/dev/tcp/127.0.0.1/` + port + `) 2>/dev/null; then echo "tcp=connected"; else echo "tcp=denied"; fi
if [ -n "$HOME" ] && mount -t tmpfs none "$HOME" 2>/dev/null; then echo "mount=mounted"; else echo "mount=denied"; fi
'
`
	path, _ := writeScript(t, t.TempDir(), "escape.sh", body)
	n.registerProcess(t, "e2e-sandbox-escape", path)
	res := n.invoke(t, invocation(t, "e2e-sandbox-escape", pb.ExecutionMode_EXECUTION_MODE_SYNC, nil)).GetResult()
	if res.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED {
		t.Fatalf("status %v %s: %s", res.GetStatus(), res.GetErrorCode(), res.GetErrorMessage())
	}
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(output(t, res.GetResult())))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		got[k] = v
	}
	if uid := got["uid"]; uid == "" || uid == "0" {
		t.Errorf("the function ran as uid %q", uid)
	}
	if got["system"] != "read" {
		t.Errorf("the function could not read system files: %v", got)
	}
	for _, k := range []string{"etc", "root", "outside", "tcp", "mount"} {
		if got[k] != "denied" {
			t.Errorf("%s: %q, want denied (output %v)", k, got[k], got)
		}
	}
	if _, err := os.Stat(etcFile); err == nil {
		t.Errorf("%s was written", etcFile)
	}
	if c := accepted.Load(); c != 0 {
		t.Errorf("the host's listener accepted %d connections from the function", c)
	}
	if want := allSandboxFeatures(); res.GetSandbox() != want {
		t.Errorf("execution sandbox %q, want %q", res.GetSandbox(), want)
	}
	n.checkServes(t)
	requireFullSandbox(t, n)
}

// worldReadableOutsideRoots returns a file anyone may read, outside the
// node's artifact roots (the harness's include the temporary directory):
// only Landlock keeps a function from reading it.
func worldReadableOutsideRoots(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "spear-outside-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := dir + "/public"
	if err := os.WriteFile(path, []byte("public\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSandboxHostNetwork: a task registered with network host reaches the
// host's loopback listener, and its runs say they have no netns.
func TestSandboxHostNetwork(t *testing.T) {
	n := startNode(t, "", nodeOpts{sandbox: "auto"})
	requireFullSandbox(t, n)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	path, _ := writeScript(t, t.TempDir(), "net.sh", "exec /bin/bash -c 'exec 3<>/dev/tcp/127.0.0.1/"+port+" && echo connected'\n")
	runCLI(t, n, "task", "create", "e2e-host-net", "--id", "e2e-host-net", "--location", path, "--network", "host")
	res := n.invoke(t, invocation(t, "e2e-host-net", pb.ExecutionMode_EXECUTION_MODE_SYNC, nil)).GetResult()
	if out := output(t, res.GetResult()); res.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || out != "connected\n" {
		t.Fatalf("status %v %s (%s), output %q", res.GetStatus(), res.GetErrorCode(), res.GetErrorMessage(), out)
	}
	if want := strings.TrimSuffix(allSandboxFeatures(), ",netns"); res.GetSandbox() != want {
		t.Errorf("execution sandbox %q, want %q", res.GetSandbox(), want)
	}
}

// TestSandboxForkBomb: a fork bomb under a pids limit of 64 fails with
// PIDS_LIMIT, and nothing is left running under its slot's uid.
func TestSandboxForkBomb(t *testing.T) {
	n := startNode(t, "", nodeOpts{sandbox: "auto"})
	requireFullSandbox(t, n)
	path, _ := writeScript(t, t.TempDir(), "bomb.sh", "echo \"uid=$(id -u)\"\nb() { b | b & }\nb\nexec sleep 297.5\n")
	if _, err := n.client.RegisterTask(ctx(t, callTimeout), &pb.RegisterTaskRequest{
		TaskId:       "e2e-fork-bomb",
		ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: path},
		Limits:       &pb.TaskLimits{PidsLimit: 64},
	}); err != nil {
		t.Fatal(err)
	}
	req := invocation(t, "e2e-fork-bomb", pb.ExecutionMode_EXECUTION_MODE_SYNC, nil)
	req.Context.TimeoutMs = 3000
	res := n.invoke(t, req).GetResult()
	if res.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_FAILED || res.GetErrorCode() != "PIDS_LIMIT" {
		t.Fatalf("status %v %q (%s); want FAILED PIDS_LIMIT", res.GetStatus(), res.GetErrorCode(), res.GetErrorMessage())
	}
	uid, ok := strings.CutPrefix(strings.TrimSpace(output(t, res.GetResult())), "uid=")
	if !ok || uid == "0" || uid == "" {
		t.Fatalf("output %q: want the slot's uid", output(t, res.GetResult()))
	}
	deadline := time.Now().Add(finishBound)
	for left := processesOfUID(uid); len(left) > 0; left = processesOfUID(uid) {
		if time.Now().After(deadline) {
			t.Fatalf("processes %v of uid %s still there after %v", left, uid, finishBound)
		}
		time.Sleep(50 * time.Millisecond)
	}
	n.checkServes(t)
}

// processesOfUID lists the live (not zombie) processes whose real uid is
// uid.
func processesOfUID(uid string) []int {
	return procsWhere("status", func(b []byte) bool {
		var state, ruid string
		for line := range strings.Lines(string(b)) {
			if f := strings.Fields(line); len(f) >= 2 {
				switch f[0] {
				case "State:":
					state = f[1]
				case "Uid:":
					ruid = f[1]
				}
			}
		}
		return ruid == uid && state != "Z"
	})
}
