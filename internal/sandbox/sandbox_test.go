package sandbox_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/sandbox"
	"github.com/spear-go/spear/internal/testwait"
)

func TestParseMode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want sandbox.Mode
		ok   bool
	}{
		{"", sandbox.ModeAuto, true},
		{"auto", sandbox.ModeAuto, true},
		{"off", sandbox.ModeOff, true},
		{"on", "", false},
	} {
		got, err := sandbox.ParseMode(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("ParseMode(%q) = %q, %v", tc.in, got, err)
		}
	}
}

func TestReportInfo(t *testing.T) {
	r := sandbox.Report{Mode: sandbox.ModeAuto, Levels: []sandbox.Level{
		{Name: "process", On: []string{"a", "b"}},
		{Name: "privileges", On: []string{"x"}, Missing: map[string]string{"uid": "not root"}},
		{Name: "network", Missing: map[string]string{"netns": "not root"}},
	}}
	want := map[string]string{
		"sandbox":            "auto: process",
		"sandbox.process":    "on (a, b)",
		"sandbox.privileges": "partial (x); uid unavailable: not root",
		"sandbox.network":    "netns unavailable: not root",
	}
	got := r.Info()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if off := (sandbox.Report{Mode: sandbox.ModeOff}).Info()["sandbox"]; off != "off" {
		t.Errorf("off report: %q", off)
	}
}

func TestSlots(t *testing.T) {
	if _, err := sandbox.NewSlots(0, 4); err == nil {
		t.Error("NewSlots with base 0 succeeded")
	}
	s, err := sandbox.NewSlots(500000, 2)
	if err != nil {
		t.Fatal(err)
	}
	a, b := s.Acquire(), s.Acquire()
	if a == b || a < 500000 || a > 500001 || b < 500000 || b > 500001 {
		t.Fatalf("slots %d, %d", a, b)
	}
	got := make(chan int)
	go func() { got <- s.Acquire() }()
	select {
	case u := <-got:
		t.Fatalf("a third slot %d out of two", u)
	case <-time.After(50 * time.Millisecond):
	}
	s.Free(a)
	if u := <-got; u != a {
		t.Errorf("got %d after freeing %d", u, a)
	}
	if base := sandbox.DefaultUIDBase("node-a"); base < 1<<20 || base != sandbox.DefaultUIDBase("node-a") {
		t.Errorf("DefaultUIDBase = %d", base)
	}
}

// TestSweeper: every process of the uid is killed, and none other; the
// work dir is emptied and given back.
func TestSweeper(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start processes as another uid")
	}
	const uid = 500100
	start := func(uid int) *exec.Cmd {
		c := exec.Command("sleep", "300")
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
		return c
	}
	victims := []*exec.Cmd{start(uid), start(uid)}
	bystander := start(uid + 1)
	dirs, err := sandbox.NewWorkDirs(filepath.Join(t.TempDir(), "work"))
	if err != nil {
		t.Fatal(err)
	}
	dir, err := dirs.Take(uid)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "left"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logged []string
	w := sandbox.NewSweeper(nil, dirs, func(msg string, _ ...any) { logged = append(logged, msg) })
	w.Release(uid, dir)
	w.Release(uid, "") // the thread is root again: it can sweep again
	w.Close()
	if len(logged) > 0 {
		t.Errorf("sweeper logged %v", logged)
	}
	if names, err := os.ReadDir(dir); err != nil || len(names) != 0 {
		t.Errorf("work dir not emptied: %v, %v", names, err)
	}
	if again, _ := dirs.Take(-1); again != dir {
		t.Errorf("work dir %s not given back (took %s)", dir, again)
	}
	for _, c := range victims {
		if err := c.Wait(); err == nil {
			t.Errorf("pid %d exited cleanly, want killed", c.Process.Pid)
		}
	}
	if err := bystander.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the bystander of another uid is gone: %v", err)
	}
	if os.Getuid() != 0 {
		t.Errorf("the node's uid changed to %d", os.Getuid())
	}
}

// TestSweeperForker: one sweep ends a uid whose processes fork without
// pause: none of that uid is left alive after it (zombies aside, which
// their new parent reaps).
func TestSweeperForker(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start processes as another uid")
	}
	const uid = 500200
	c := exec.Command("sh", "-c", "while :; do sleep 300 & done")
	c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Process.Kill()
		_ = c.Wait()
		if t.Failed() { // leave none of the forker's thousands behind
			w := sandbox.NewSweeper(nil, nil, func(string, ...any) {})
			for range 5 {
				w.Release(uid, "")
			}
			w.Close()
		}
	})
	testwait.Until(t, "the forker's children", func() bool { return len(aliveOf(t, uid)) >= 20 })
	var logged []string
	w := sandbox.NewSweeper(nil, nil, func(msg string, _ ...any) { logged = append(logged, msg) })
	w.Release(uid, "")
	w.Close()
	if len(logged) > 0 {
		t.Errorf("sweeper logged %v", logged)
	}
	_ = c.Wait()
	testwait.Until(t, "killed processes to be gone", func() bool {
		left := aliveOf(t, uid)
		for _, pid := range left {
			if state(pid) != "Z" && state(pid) != "X" && !dying(pid) {
				return false
			}
		}
		return true
	})
}

// aliveOf lists the pids whose real uid is uid.
func aliveOf(t *testing.T, uid int) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, e := range entries {
		var st syscall.Stat_t
		if syscall.Stat("/proc/"+e.Name(), &st) == nil && e.Name()[0] >= '0' && e.Name()[0] <= '9' && st.Uid == uint32(uid) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

// state is a process's state letter ("" once it is gone).
func state(pid string) string {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2 : i+3]
	}
	return ""
}

// dying reports whether a process has SIGKILL pending (killed, not yet
// scheduled to exit) or is gone.
func dying(pid string) bool {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return true
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "ShdPnd:"); ok {
			return strings.TrimSpace(v) == "0000000000000100"
		}
	}
	return false
}

// TestWorkDirs: an earlier node's work dirs are cleared; two runs at once
// get two dirs, each private and owned by its uid; a dir given back is
// emptied, private again and reused, whatever its run did to it.
func TestWorkDirs(t *testing.T) {
	root := filepath.Join(t.TempDir(), "work")
	if err := os.MkdirAll(filepath.Join(root, "left-over"), 0o755); err != nil {
		t.Fatal(err)
	}
	w, err := sandbox.NewWorkDirs(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "left-over")); !os.IsNotExist(err) {
		t.Errorf("an earlier node's work dir is still there: %v", err)
	}
	uid := -1
	if os.Geteuid() == 0 {
		uid = 500200
	}
	a, err := w.Take(uid)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := w.Take(uid)
	if a == b {
		t.Errorf("two runs share %s", a)
	}
	checkPrivate(t, a, uid)
	if err := os.MkdirAll(filepath.Join(a, "sub", "deeper"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(a, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(a, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := w.Give(a); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/etc/passwd"); err != nil {
		t.Fatalf("emptying followed a link: %v", err)
	}
	again, err := w.Take(uid)
	if err != nil || again != a {
		t.Fatalf("Take after Give: %s, %v; want %s again", again, err, a)
	}
	checkPrivate(t, again, uid)
	if names, _ := os.ReadDir(again); len(names) != 0 {
		t.Errorf("a reused work dir holds %v", names)
	}
	if !sandbox.Traversable("/") || sandbox.Traversable(t.TempDir()) {
		t.Errorf("Traversable: / %v, a 0700 temp dir %v", sandbox.Traversable("/"), sandbox.Traversable(t.TempDir()))
	}
}

// checkPrivate checks that dir is 0700 and owned by uid (when >= 0).
func checkPrivate(t *testing.T, dir string, uid int) {
	t.Helper()
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("work dir %v %v", fi, err)
	}
	if st := fi.Sys().(*syscall.Stat_t); uid >= 0 && int(st.Uid) != uid {
		t.Errorf("work dir owned by %d, want %d", st.Uid, uid)
	}
}

func TestHostSupport(t *testing.T) {
	if err := sandbox.CheckSeccomp(); err != nil {
		t.Errorf("seccomp: %v", err)
	}
	if abi, err := sandbox.LandlockABI(); err != nil || abi < 1 {
		t.Logf("landlock not available here: %d %v", abi, err)
	}
}
