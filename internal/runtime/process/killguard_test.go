package process_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/runtime/process"
)

// ancestorHelperEnv makes the test binary run TestKillGuardAncestorHelper.
const ancestorHelperEnv = "PROCESS_TEST_GUARD_HELPER"

// runEnv is the environment of a process of node's run execID.
func runEnv(node, execID string) []string {
	return []string{process.EnvNodeID + "=" + node, process.EnvExecutionID + "=" + execID}
}

func TestMarkedAsRun(t *testing.T) {
	cases := []struct {
		name, environ string
		want          bool
	}{
		{"a run of the node", "PATH=/bin\x00SPEAR_EXECUTION_ID=e1\x00SPEAR_NODE_ID=n1\x00", true},
		{"no trailing NUL", "SPEAR_NODE_ID=n1\x00SPEAR_EXECUTION_ID=e1", true},
		{"another node", "SPEAR_NODE_ID=n2\x00SPEAR_EXECUTION_ID=e1\x00", false},
		{"node id prefix", "SPEAR_NODE_ID=n1x\x00SPEAR_EXECUTION_ID=e1\x00", false},
		{"no execution id", "SPEAR_NODE_ID=n1\x00", false},
		{"empty execution id", "SPEAR_NODE_ID=n1\x00SPEAR_EXECUTION_ID=\x00", false},
		{"marker inside a value", "X=SPEAR_NODE_ID=n1\x00SPEAR_EXECUTION_ID=e1\x00", false},
		{"empty", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := process.MarkedAsRun([]byte(tc.environ), "n1"); got != tc.want {
				t.Errorf("MarkedAsRun(%q, n1) = %v, want %v", tc.environ, got, tc.want)
			}
		})
	}
	if process.MarkedAsRun([]byte("SPEAR_NODE_ID=\x00SPEAR_EXECUTION_ID=e1\x00"), "") {
		t.Error("a node without an id recognises runs")
	}
}

// sleeper is a sleep process with a given environment, in a process group
// of its own.
type sleeper struct {
	pid  int
	done chan struct{} // closed once it has exited
}

func startSleeper(t *testing.T, env ...string) *sleeper {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	cmd.Env = append([]string{"PATH=" + process.DefaultPath}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &sleeper{pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(s.done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-s.done })
	return s
}

func (s *sleeper) alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// exitedPid returns the pid of a process that has exited and been reaped.
func exitedPid(t *testing.T) int {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func TestKillGuard(t *testing.T) {
	const node = "guard-test-node"
	run := startSleeper(t, runEnv(node, "e1")...)
	otherNode := startSleeper(t, runEnv("other-node", "e2")...)
	noExecID := startSleeper(t, process.EnvNodeID+"="+node)
	unmarked := startSleeper(t)
	gone := exitedPid(t)

	for _, tc := range []struct {
		name string
		pid  int
		want bool
	}{
		{"the node itself", os.Getpid(), false},
		{"its parent", os.Getppid(), false},
		{"init", 1, false},
		{"a run of the node", run.pid, true},
		{"a run of another node", otherNode.pid, false},
		{"no execution id", noExecID.pid, false},
		{"no marker", unmarked.pid, false},
		{"exited", gone, false},
	} {
		if got := process.MayKill(node, tc.pid); got != tc.want {
			t.Errorf("process, %s: MayKill = %v, want %v", tc.name, got, tc.want)
		}
	}
	for _, tc := range []struct {
		name string
		pgid int
		want bool
	}{
		{"the node's", unix.Getpgrp(), false},
		{"init's", 1, false},
		{"led by a run of the node", run.pid, true},
		{"led by a process without the marker", unmarked.pid, false},
		{"leader gone", gone, true},
	} {
		if got := process.MayKillGroup(node, tc.pgid); got != tc.want {
			t.Errorf("group %s: MayKillGroup = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestKillGuardSparesMarkedAncestors: the node's ancestors and their group
// are spared even when they carry the node's run marker (a node started
// from a shell that exported SPEAR_NODE_ID, or from a function).
func TestKillGuardSparesMarkedAncestors(t *testing.T) {
	// "; exit" keeps sh from exec'ing the helper: sh stays its parent.
	cmd := exec.Command("/bin/sh", "-c", `"$0" -test.run='^TestKillGuardAncestorHelper$' -test.v; exit $?`, os.Args[0])
	cmd.Env = append(os.Environ(), append(runEnv("ancestor-node", "e1"), ancestorHelperEnv+"=1")...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // sh leads the group
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestKillGuardAncestorHelper") {
		t.Fatalf("helper: %v\n%s", err, out)
	}
}

// TestKillGuardAncestorHelper runs under TestKillGuardSparesMarkedAncestors.
func TestKillGuardAncestorHelper(t *testing.T) {
	if os.Getenv(ancestorHelperEnv) == "" {
		t.Skip("runs only as TestKillGuardSparesMarkedAncestors's helper")
	}
	node := os.Getenv(process.EnvNodeID)
	env, err := os.ReadFile("/proc/" + strconv.Itoa(os.Getppid()) + "/environ")
	if err != nil || !process.MarkedAsRun(env, node) {
		t.Fatalf("the parent shell does not carry the marker (%v): the test would prove nothing", err)
	}
	if !process.MarkedAsRun(mustRead(t, "/proc/self/environ"), node) {
		t.Fatal("the helper does not carry the marker")
	}
	for _, tc := range []struct {
		name string
		may  bool
	}{
		{"itself", process.MayKill(node, os.Getpid())},
		{"its parent", process.MayKill(node, os.Getppid())},
		{"its group", process.MayKillGroup(node, unix.Getpgrp())},
	} {
		if tc.may {
			t.Errorf("the guard would kill %s", tc.name)
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReconcileKillsOnlyRuns: processes in the node's cgroups that are not
// runs of the node — here standing for a live node's fork-server thread in
// the shared cgroup, and a stranger in a run's cgroup — survive Reconcile;
// the runs' processes do not, and the cgroup with a stranger stays.
func TestReconcileKillsOnlyRuns(t *testing.T) {
	node := fmt.Sprintf("reconcile-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	// No fork server: its thread, in the shared cgroup, leaves the cgroup
	// only when this process exits.
	rt := process.New(process.Options{NodeID: node, OwnCgroups: true})
	t.Cleanup(func() { _ = rt.Close(context.Background()) })
	dir, err := process.NodePidsCgroup(rt)
	if err != nil {
		t.Fatal(err)
	}
	if dir == "" {
		if cgroupsExpected("pids") {
			t.Fatal("the pids cgroup controller is not used, though CI runs as root with /sys/fs/cgroup/pids writable")
		}
		t.Skip("the pids cgroup controller is not available here (needs Linux, root, a writable cgroup hierarchy)")
	}
	leftover, shared := filepath.Join(dir, "leftover-run"), filepath.Join(dir, "shared")
	for _, d := range []string{leftover, shared} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { removeCgroups(t, leftover, shared, dir) }) // after the sleepers are killed
	runs := []*sleeper{startSleeper(t, runEnv(node, "e1")...), startSleeper(t, runEnv(node, "e2")...)}
	stranger, liveNode := startSleeper(t), startSleeper(t)
	joinCgroup(t, leftover, runs[0].pid, stranger.pid)
	joinCgroup(t, shared, runs[1].pid, liveNode.pid)

	n, err := rt.Reconcile(t.Context())
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), strconv.Itoa(stranger.pid)) {
		t.Errorf("Reconcile: %v; want the cgroup holding the stranger %d left in place", err, stranger.pid)
	}
	if n != len(runs) {
		t.Errorf("Reconcile found %d processes, want %d", n, len(runs))
	}
	for i, s := range runs {
		select {
		case <-s.done:
		case <-time.After(30 * time.Second): // a hang guard
			t.Errorf("run %d (pid %d) still alive after Reconcile", i, s.pid)
		}
	}
	if !stranger.alive() || !liveNode.alive() {
		t.Errorf("Reconcile killed a process that is not a run: stranger alive=%v, live node alive=%v", stranger.alive(), liveNode.alive())
	}
}

// joinCgroup moves pids into cgroup dir.
func joinCgroup(t *testing.T, dir string, pids ...int) {
	t.Helper()
	for _, pid := range pids {
		f, err := os.OpenFile(filepath.Join(dir, "cgroup.procs"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.WriteString(strconv.Itoa(pid))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatalf("moving %d into %s: %v", pid, dir, err)
		}
	}
}

// removeCgroups removes the cgroups dirs once their processes have left.
func removeCgroups(t *testing.T, dirs ...string) {
	deadline := time.Now().Add(30 * time.Second)
	for _, d := range dirs {
		for {
			err := unix.Rmdir(d)
			if err == nil || errors.Is(err, unix.ENOENT) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("removing %s: %v", d, err)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
