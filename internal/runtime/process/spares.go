package process

// Spares: the next process of a task called often, started before its
// invocation arrives (forked, exec'd, under its limits, in its sandbox and
// cgroup, blocked reading its standard input), so that the invocation pays
// only for writing its input and reading its output. A process is never
// reused: a spare runs exactly one invocation, or is killed unused.
//
// A spare's environment must be known before the invocation, so spares are
// started only for invocations without an environment of their own (the
// task's default) on their first attempt, and each is started as the
// execution id it will run: Reserve hands that id to the caller, which
// gives it to its execution (see runtime.Prestarter). A function runs up
// to its first read of standard input before it is invoked, and a spare
// that is not taken in time is killed: a function whose start has effects
// beyond itself opts out with the artifact metadata prestart: "false".

import (
	"context"
	"errors"
	"fmt"
	"os"
	goruntime "runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/runtime"
)

// MetaPrestart is the artifact metadata that turns spares off for a task
// ("false"); "true" or unset leaves them on.
const MetaPrestart = "prestart"

// DefaultSpares is the default for Options.Spares: how many spares a node
// holds at most, of every task.
const DefaultSpares = 8

// sparesPerTask is how many spares one kind of invocation gets at most.
const sparesPerTask = 2

// spareTTL is how long a spare waits to be taken before it is killed, and
// how soon after the last call of its kind the next one must come for the
// kind to count as busy (only busy kinds get spares).
const spareTTL = 5 * time.Second

// spareKey is a kind of invocation spares are started for: everything of
// an invocation but its id and streams, for those that can have spares.
type spareKey struct {
	task, digest, location, function string
	memory, pids                     int64
	hostNetwork                      bool
	attempt                          int32
}

// keyOf returns inv's kind, and false when inv cannot have spares: it has
// an environment of its own, is a retry, or its task opted out.
func keyOf(inv *runtime.Invocation) (spareKey, bool) {
	a := inv.Artifact
	if len(inv.Env) > 0 || inv.Attempt > 1 || a.Metadata[MetaPrestart] == "false" {
		return spareKey{}, false
	}
	return spareKey{
		task: a.TaskID, digest: a.Digest, location: a.Location, function: inv.Function,
		memory: inv.MemoryLimitBytes, pids: inv.PidsLimit, hostNetwork: inv.HostNetwork, attempt: inv.Attempt,
	}, true
}

// checkPrestart checks the artifact metadata MetaPrestart.
func checkPrestart(a runtime.Artifact) error {
	switch v := a.Metadata[MetaPrestart]; v {
	case "", "true", "false":
		return nil
	default:
		return errdefs.InvalidArtifactMetadata.New("process: metadata %s %q: want \"true\" or \"false\"", MetaPrestart, v)
	}
}

// spare is a child started, or starting, for an invocation to come, as
// execution id. x and file are set, or the start failed (x nil), once
// started is closed; expiry is set while it is ready.
type spare struct {
	id      string
	key     spareKey
	started chan struct{}
	// claimed: reserved while it was starting; its start then hands it to
	// the reservation rather than to the ready ones (under spares.mu).
	claimed bool
	x       *run
	file    fileID
	expiry  *time.Timer
}

// fileID identifies an artifact's content as it was when a spare was
// exec'd: a file replaced or rewritten since no longer matches.
type fileID struct {
	dev, ino uint64
	size     int64
	mtime    time.Time
}

// statFile returns path's fileID.
func statFile(path string) (fileID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	if st == nil {
		return fileID{}, fmt.Errorf("process: %s: no inode", path)
	}
	return fileID{dev: st.Dev, ino: st.Ino, size: fi.Size(), mtime: fi.ModTime()}, nil
}

// IDSource makes execution ids that sort in the order it makes them (see
// execution.IDs).
type IDSource interface {
	// Ahead returns an id for an execution to come.
	Ahead() string
	// Current reports whether id, made by Ahead, still sorts after every
	// execution made before the caller's.
	Current(id string) bool
}

// spares holds a runtime's spares. A nil *spares holds none.
type spares struct {
	r   *Runtime
	ids IDSource
	max int
	ttl time.Duration

	mu       sync.Mutex
	ready    map[spareKey][]*spare
	starting map[spareKey][]*spare // not claimed yet
	reserved map[string]*spare     // by execution id
	// waiting counts the ready and starting spares of each kind, but the
	// claimed ones; alive all of them, reserved included.
	waiting map[spareKey]int
	alive   int
	lastAsk map[spareKey]time.Time
	// noWait are the kinds whose spare exited before it was taken: the
	// function does not wait for its input, so it gets no more spares.
	noWait map[spareKey]bool
	// forgets counts the calls of forget: a spare whose start began before
	// one is not kept.
	forgets int
	closed  bool
	starts  sync.WaitGroup

	used, discarded atomic.Uint64
	// startHook, when set (tests), is called as a spare starts.
	startHook func()
}

// newSpares returns the spares of r, at most max of them; nil (none) when
// max <= 0 or there is no id to start them as.
func newSpares(r *Runtime, max int, ids IDSource) *spares {
	if max <= 0 || ids == nil {
		return nil
	}
	return &spares{
		r: r, ids: ids, max: max, ttl: spareTTL,
		ready: map[spareKey][]*spare{}, starting: map[spareKey][]*spare{}, reserved: map[string]*spare{}, waiting: map[spareKey]int{},
		lastAsk: map[spareKey]time.Time{}, noWait: map[spareKey]bool{},
	}
}

// Reserve implements runtime.Prestarter.
func (r *Runtime) Reserve(inv *runtime.Invocation) (string, func(), bool) {
	return r.spares.reserve(inv)
}

// Spares implements runtime.Prestarter.
func (r *Runtime) Spares() runtime.SpareCounts {
	s := r.spares
	if s == nil {
		return runtime.SpareCounts{}
	}
	s.mu.Lock()
	ready := 0
	for _, l := range s.ready {
		ready += len(l)
	}
	s.mu.Unlock()
	return runtime.SpareCounts{Ready: ready, Used: s.used.Load(), Discarded: s.discarded.Load()}
}

// reserve takes a ready spare of inv's kind, else one still starting (its
// invocation waits for the rest of its start, which costs less than a
// start of its own), and starts another when the kind is busy (called
// again within the spares' time to live, or a spare was just taken).
func (s *spares) reserve(inv *runtime.Invocation) (string, func(), bool) {
	if s == nil {
		return "", nil, false
	}
	k, ok := keyOf(inv)
	if !ok {
		return "", nil, false
	}
	now := time.Now()
	s.mu.Lock()
	busy := now.Sub(s.lastAsk[k]) < s.ttl
	s.lastAsk[k] = now
	sp := s.pop(k)
	if sp == nil {
		sp = s.claim(k)
	}
	var stale *spare
	if sp != nil && !s.ids.Current(sp.id) {
		// An execution made after the spare's id sorts after it: the call
		// taking the spare would list before that execution, though made
		// later. Ids keep creation order: this spare is not used.
		delete(s.reserved, sp.id)
		stale, sp = sp, nil
	}
	var next *spare
	if (sp != nil || busy) && s.roomFor(k) {
		next = s.newStarting(k)
	}
	forgets := s.forgets
	s.mu.Unlock()
	if stale != nil {
		go s.discardStarted(stale)
	}
	if next != nil {
		tmpl := &runtime.Invocation{
			ExecutionID: next.id, Artifact: inv.Artifact, Function: inv.Function, Attempt: inv.Attempt,
			MemoryLimitBytes: inv.MemoryLimitBytes, PidsLimit: inv.PidsLimit, HostNetwork: inv.HostNetwork,
		}
		go s.start(next, tmpl, forgets)
	}
	if sp == nil {
		return "", nil, false
	}
	id := sp.id
	return id, func() { s.release(id) }, true
}

// claim takes the newest starting spare of kind k into the reserved
// ones; nil when none is starting (or the kind gets no more spares: those
// starting are discarded once started). s.mu is held.
func (s *spares) claim(k spareKey) *spare {
	l := s.starting[k]
	if len(l) == 0 || s.noWait[k] {
		return nil
	}
	sp := l[len(l)-1]
	s.starting[k] = l[:len(l)-1]
	s.waiting[k]--
	sp.claimed = true
	s.reserved[sp.id] = sp
	return sp
}

// newStarting counts a spare of kind k about to start, as an id made now.
// s.mu is held.
func (s *spares) newStarting(k spareKey) *spare {
	sp := &spare{id: s.ids.Ahead(), key: k, started: make(chan struct{})}
	s.starting[k] = append(s.starting[k], sp)
	s.waiting[k]++
	s.alive++
	s.starts.Add(1)
	return sp
}

// pop takes the newest ready spare of kind k (the one whose id is the
// likeliest to be current) into the reserved ones; nil when there is none.
// s.mu is held.
func (s *spares) pop(k spareKey) *spare {
	l := s.ready[k]
	if len(l) == 0 {
		return nil
	}
	sp := l[len(l)-1]
	if len(l) == 1 {
		delete(s.ready, k)
	} else {
		s.ready[k] = l[:len(l)-1]
	}
	s.waiting[k]--
	sp.expiry.Stop()
	s.reserved[sp.id] = sp
	return sp
}

// roomFor reports whether one more spare of kind k may start: within the
// bounds, and while runs leave a CPU idle (a node whose CPUs are all
// running functions gains nothing by starting the next ones ahead: the
// start costs the same CPU, and only takes it from the runs). s.mu is
// held.
func (s *spares) roomFor(k spareKey) bool {
	return !s.closed && !s.noWait[k] && s.alive < s.max && s.waiting[k] < sparesPerTask &&
		int(s.r.running.Load()) < goruntime.NumCPU()
}

// start starts spare sp for invocations like tmpl. Once started, it is
// ready, or its reservation's if it was claimed meanwhile; it is
// discarded if forget was called since forgets calls.
func (s *spares) start(sp *spare, tmpl *runtime.Invocation, forgets int) {
	defer s.starts.Done()
	defer close(sp.started)
	k := sp.key
	if s.startHook != nil {
		s.startHook()
	}
	file, err := statFile(tmpl.Artifact.Location)
	var x *run
	if err == nil {
		x, err = s.r.launchAhead(tmpl)
	}
	s.mu.Lock()
	if err == nil {
		sp.x, sp.file = x, file
	} else {
		s.alive--
	}
	keep := sp.claimed
	if !sp.claimed {
		s.starting[k] = slices.DeleteFunc(s.starting[k], func(o *spare) bool { return o == sp })
		s.waiting[k]--
		if keep = err == nil && !s.closed && !s.noWait[k] && s.forgets == forgets; keep {
			sp.expiry = time.AfterFunc(s.ttl, func() { s.expire(sp) })
			s.ready[k] = append(s.ready[k], sp)
			s.waiting[k]++
		}
	}
	s.mu.Unlock()
	switch {
	case err != nil:
		s.r.log.Debug("process: a spare did not start", "task", k.task, "err", err)
	case !keep:
		s.discard(sp)
	}
}

// take returns the run of the spare reserved for inv, once started, given
// inv's input, or nil when inv must start a child of its own: no spare
// was reserved as its id, it did not start (or not before ctx ended), or
// it no longer fits (another kind of invocation, an artifact changed
// since, a function that did not wait for its input), and is discarded.
func (s *spares) take(ctx context.Context, inv *runtime.Invocation) *run {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	sp := s.reserved[inv.ExecutionID]
	delete(s.reserved, inv.ExecutionID)
	s.mu.Unlock()
	if sp == nil {
		return nil
	}
	select {
	case <-sp.started:
	case <-ctx.Done():
		s.discardStarted(sp)
		return nil
	}
	if sp.x == nil {
		return nil
	}
	if !s.fits(sp, inv) {
		go s.discard(sp)
		return nil
	}
	x := sp.x
	x.inv, x.begin = inv, time.Now()
	if err := x.pipes.feed(inv.Input); err != nil {
		x.log.Warn("process: giving a spare its input", "err", err)
		go s.discard(sp)
		return nil
	}
	x.startup = time.Since(x.begin)
	x.sharedMax0 = s.r.sharedPidsMax(x.cg)
	s.used.Add(1)
	s.mu.Lock()
	s.alive-- // a run now
	s.mu.Unlock()
	return x
}

// fits reports whether spare sp can run inv.
func (s *spares) fits(sp *spare, inv *runtime.Invocation) bool {
	if k, ok := keyOf(inv); !ok || k != sp.key {
		return false
	}
	if f, err := statFile(inv.Artifact.Location); err != nil || f != sp.file {
		return false
	}
	if exited(sp.x.pid) {
		s.mu.Lock()
		s.noWait[sp.key] = true
		gone := s.ready[sp.key]
		delete(s.ready, sp.key)
		s.waiting[sp.key] -= len(gone)
		s.mu.Unlock()
		s.r.log.Info("process: a function exited before its invocation; its task gets no more spares", "task", sp.key.task)
		for _, o := range gone {
			o.expiry.Stop()
			go s.discard(o)
		}
		return false
	}
	return true
}

// exited reports whether process pid (a child not reaped yet) has exited.
func exited(pid int) bool {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT|unix.WNOHANG, nil)
	return err == nil && info.Signo != 0 || errors.Is(err, unix.ECHILD)
}

// release discards the spare reserved as id unless a run took it.
func (s *spares) release(id string) {
	s.mu.Lock()
	sp := s.reserved[id]
	delete(s.reserved, id)
	s.mu.Unlock()
	if sp != nil {
		s.discardStarted(sp)
	}
}

// discardStarted discards sp once its start is over (at once if it is),
// unless the start failed.
func (s *spares) discardStarted(sp *spare) {
	discard := func() {
		if <-sp.started; sp.x != nil {
			s.discard(sp)
		}
	}
	select {
	case <-sp.started:
		discard()
	default:
		go discard()
	}
}

// expire discards sp if it is still ready.
func (s *spares) expire(sp *spare) {
	s.mu.Lock()
	l := s.ready[sp.key]
	i := indexOf(l, sp)
	if i >= 0 {
		s.ready[sp.key] = append(l[:i:i], l[i+1:]...)
		s.waiting[sp.key]--
	}
	s.mu.Unlock()
	if i >= 0 {
		s.discard(sp)
	}
}

func indexOf(l []*spare, sp *spare) int {
	for i, x := range l {
		if x == sp {
			return i
		}
	}
	return -1
}

// discard kills a spare that was not run and frees what it held.
func (s *spares) discard(sp *spare) {
	sp.x.abort()
	sp.x.release()
	s.discarded.Add(1)
	s.mu.Lock()
	s.alive--
	s.mu.Unlock()
}

// forget discards the ready spares of task (of its version digest, or of
// every version when digest is "").
func (s *spares) forget(task, digest string) {
	if s == nil {
		return
	}
	var gone []*spare
	s.mu.Lock()
	s.forgets++
	for k, l := range s.ready {
		if k.task == task && (digest == "" || k.digest == digest) {
			gone = append(gone, l...)
			delete(s.ready, k)
			s.waiting[k] -= len(l)
		}
	}
	for k := range s.lastAsk { // what the task's kinds were asked, and did
		if k.task == task && (digest == "" || k.digest == digest) {
			delete(s.lastAsk, k)
			delete(s.noWait, k)
		}
	}
	s.mu.Unlock()
	for _, sp := range gone {
		sp.expiry.Stop()
		s.discard(sp)
	}
}

// close discards every spare, once those starting have started, and
// starts no more.
func (s *spares) close() {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.starts.Wait()
	s.forgetAll()
}

// forgetAll discards every ready and reserved spare.
func (s *spares) forgetAll() {
	var gone []*spare
	s.mu.Lock()
	for k, l := range s.ready {
		gone = append(gone, l...)
		delete(s.ready, k)
		s.waiting[k] -= len(l)
	}
	for id, sp := range s.reserved {
		gone = append(gone, sp)
		delete(s.reserved, id)
	}
	s.mu.Unlock()
	for _, sp := range gone {
		if sp.expiry != nil {
			sp.expiry.Stop()
		}
		s.discardStarted(sp)
	}
}
