package process

import (
	"errors"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// orphanReaper makes the node the reaper of what its runs leave behind.
//
// A killed process holds its pid, and its place in a pids cgroup, until
// its parent reaps it; when the parent died first, until whoever inherits
// it does. Without this, that is init, which may reap late (some reap
// every few seconds) or never (the node as PID 1 of a container), so a
// fork bomb's dead would keep the shared pids cgroup full after the run
// ended. As a child subreaper the node inherits them instead:
// run.awaitGroupGone reaps a run's group when it ends, and a sweep on
// SIGCHLD reaps the rest (descendants that left the group with setsid).
//
// The reaper never reaps a process os/exec waits for: a run's leader is a
// group leader but not a session leader, and any other child of the node
// is in the node's own process group.
type orphanReaper struct {
	fs      procfs.FS
	selfPG  int
	signals chan os.Signal
	done    chan struct{}
}

// sweepEvery bounds how often the sweep runs; SIGCHLDs in between are
// coalesced.
const sweepEvery = 100 * time.Millisecond

// newOrphanReaper makes the node a child subreaper and starts the sweep;
// nil when that is not possible.
func newOrphanReaper() (*orphanReaper, error) {
	fs, err := procfs.NewFS(procfs.DefaultMountPoint)
	if err != nil {
		return nil, err
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, err
	}
	o := &orphanReaper{fs: fs, selfPG: unix.Getpgrp(), signals: make(chan os.Signal, 1), done: make(chan struct{})}
	signal.Notify(o.signals, unix.SIGCHLD)
	go o.loop()
	return o, nil
}

func (o *orphanReaper) loop() {
	defer close(o.done)
	for range o.signals {
		o.sweep()
		time.Sleep(sweepEvery)
	}
}

// stop ends the sweep. The node stays a subreaper: what it inherits
// after this is reaped with it.
func (o *orphanReaper) stop() {
	signal.Stop(o.signals)
	close(o.signals)
	<-o.done
}

// sweep reaps the node's children that are zombies left by runs.
func (o *orphanReaper) sweep() {
	for _, pid := range o.children() {
		p, err := o.fs.Proc(pid)
		if err != nil {
			continue
		}
		st, err := p.Stat()
		if err != nil || st.State != "Z" {
			continue
		}
		escaped := st.Session == pid
		orphan := st.PGRP != o.selfPG && st.PGRP != pid
		if escaped || orphan {
			_, _ = unix.Wait4(pid, nil, unix.WNOHANG, nil)
		}
	}
}

// children lists the node's child processes, from every thread's
// children file.
func (o *orphanReaper) children() []int {
	files, _ := filepath.Glob("/proc/self/task/*/children")
	var pids []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(s); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// reapGroup reaps the zombies of process group pgid that are the node's
// children, and reports whether the group is gone.
func reapGroup(pgid int) (gone bool) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PGID, pgid, &info, unix.WEXITED|unix.WNOHANG, nil)
		if err != nil || info.Signo == 0 {
			break // no child in the group, or none has exited
		}
	}
	return errors.Is(unix.Kill(-pgid, 0), unix.ESRCH)
}
