package process

import (
	"context"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spear-go/spear/internal/runtime"
)

// groupStop stops a run's process group as soon as the run's context ends:
// at once, or, for a graceful stop (a runtime.GracefulStop cause), SIGTERM
// and then SIGKILL after the grace or once the child has exited, whichever
// comes first. What its run's cgroup holds is killed with the group.
type groupStop struct {
	pid int
	cg  *runCgroup // nil: none
	// exited is closed once the child has exited (or is being killed).
	exited chan struct{}
	// done is closed once a stop that fired is over.
	done chan struct{}
	// termed records that SIGTERM was sent.
	termed atomic.Bool
	// cancel is context.AfterFunc's: it reports whether the stop was
	// prevented from firing.
	cancel func() bool
}

// armGroupStop arms the stop of process group pid for when ctx ends.
func armGroupStop(ctx context.Context, pid int, cg *runCgroup) *groupStop {
	s := &groupStop{pid: pid, cg: cg, exited: make(chan struct{}), done: make(chan struct{})}
	s.cancel = context.AfterFunc(ctx, func() { s.fire(runtime.StopGrace(ctx)) })
	return s
}

// fire stops the group, after a grace when grace > 0.
func (s *groupStop) fire(grace time.Duration) {
	defer close(s.done)
	if grace > 0 {
		s.terminate(grace)
	}
	killGroup(s.pid)
	if s.cg != nil {
		s.cg.killAll()
	}
}

// terminate sends the group SIGTERM, unless the child has exited already,
// and waits for the child's exit or the end of the grace.
func (s *groupStop) terminate(grace time.Duration) {
	select {
	case <-s.exited:
		return // nothing left to ask
	default:
	}
	s.termed.Store(true)
	signalGroup(s.pid, unix.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-s.exited:
	case <-t.C:
	}
}

// childExited ends a grace under way: the child has exited, or is being
// killed. Call it once.
func (s *groupStop) childExited() { close(s.exited) }

// disarm prevents the stop from firing, or, if it fired, waits until it is
// over, so that no signal can reach the group id once the child has been
// reaped. It reports whether the stop fired.
func (s *groupStop) disarm() (fired bool) {
	if s.cancel() {
		return false
	}
	<-s.done
	return true
}
