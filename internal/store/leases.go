package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Cluster-wide run leases: a task's max_concurrency holds across all the
// nodes that share the store, through a counting semaphore in the KV
// bucket spear_slots. Lease i of task T is the key "T.i", i in
// [0, max_concurrency): a run holds one while it runs. A key is free when
// it is missing or its value is empty; it is held when its value names the
// holder (node and execution). Taking a free key is a compare-and-set on
// its revision (Create for a missing key, Update for an empty one), so two
// nodes can never hold the same key; releasing is a compare-and-set that
// writes the empty value.
//
// A lease must not outlive a node that dies with it (kill -9, a machine
// lost), yet must last as long as a run does, however long. Per-key TTLs
// (KeyTTL) cannot be extended by Update, and a run's timeout can be an
// hour; so the bucket's MaxAge (LeaseTTL) bounds every key's life instead,
// and the holder renews its lease every LeaseTTL/4 by compare-and-set
// (Update with its revision: a new revision with a fresh age). A dead
// node's leases are gone at most LeaseTTL after its last renewal, with
// nothing but JetStream's own expiry. A holder that could not renew for
// nearly LeaseTTL (cut off from the store) must assume the lease is gone
// and stop its run (see Lease.Expires): its key may already be another's.
// Its deadline counts from when it sent its last successful renewal, before
// the server stamped (and started ageing) it, so the holder gives up first.

// BucketSlots holds the cluster-wide run leases.
const BucketSlots = "spear_slots"

// DefaultLeaseTTL is how long a lease lives after its last renewal: the
// bound on how long a dead node keeps a task's slot from the others.
const DefaultLeaseTTL = 10 * time.Second

// ErrLeaseLost: the lease expired or was taken over; the run that held it
// must stop.
var ErrLeaseLost = errors.New("the run's cluster-wide lease expired (its node could not renew it): another run may hold it now")

// Leases is the cluster-wide semaphore of tasks' max_concurrency.
type Leases struct {
	*core
	mu sync.Mutex
	// watches wake the waiters of a task on this node when one of its
	// leases is freed; one KV watch per task, shared by its waiters.
	watches map[string]*leaseWatch
}

// Lease is a held run lease.
type Lease struct {
	key    string
	holder []byte
	ttl    time.Duration
	mu     sync.Mutex
	rev    uint64
	sent   time.Time // when the write that set rev was sent
}

// provisionSlots creates the leases' bucket: every key expires LeaseTTL
// after its last write; on file, with the store's copies, so leases
// survive the loss of a server (a lost lease would let one more run).
func (s *provisioner) provisionSlots(ctx context.Context) error {
	s.leaseTTL = s.opts.LeaseTTL
	if s.leaseTTL <= 0 {
		s.leaseTTL = DefaultLeaseTTL
	}
	slots, err := s.ensureKV(ctx, jetstream.KeyValueConfig{
		Bucket:   BucketSlots,
		History:  1,
		TTL:      s.leaseTTL,
		Storage:  jetstream.FileStorage,
		Replicas: s.opts.Replicas,
	})
	if err != nil {
		return fmt.Errorf("bucket %s: %w", BucketSlots, err)
	}
	s.slots = boundKV{slots, s.core}
	return nil
}

// TTL is how long a lease lives without renewal.
func (s *Leases) TTL() time.Duration { return s.leaseTTL }

// leaseKey is lease i of task.
func leaseKey(task string, i int) string { return fmt.Sprintf("%s.%d", task, i) }

// TryAcquire takes a free lease of task, of the limit it has, for holder
// (who holds it, for people reading the bucket). It returns nil, nil when
// all limit leases are held. Keys are tried from a random one, so nodes
// that try at once spread over the free keys. Cost: a read per key tried,
// and one write for the key taken.
func (s *Leases) TryAcquire(ctx context.Context, task string, limit int, holder string) (*Lease, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("lease of task %q: limit %d", task, limit)
	}
	first := rand.N(limit)
	for j := range limit {
		key := leaseKey(task, (first+j)%limit)
		rev, free, err := s.state(ctx, key)
		if err != nil {
			return nil, err
		}
		if !free {
			continue
		}
		l := &Lease{key: key, holder: []byte(holder), ttl: s.leaseTTL, sent: time.Now()}
		if rev == 0 {
			l.rev, err = s.slots.Create(ctx, key, l.holder)
		} else {
			l.rev, err = s.slots.Update(ctx, key, l.holder, rev)
		}
		switch {
		case err == nil:
			return l, nil
		case conflict(err): // taken by another since the read
			continue
		default:
			return nil, s.unavailable("take a run lease", err)
		}
	}
	return nil, nil
}

// state reads a lease key: its revision (0: missing) and whether it is
// free.
func (s *Leases) state(ctx context.Context, key string) (rev uint64, free bool, err error) {
	e, err := s.slots.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, true, nil
	case err != nil:
		return 0, false, s.unavailable("read a run lease", err)
	}
	return e.Revision(), len(e.Value()) == 0, nil
}

// conflict says whether a compare-and-set lost to another writer.
func conflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}

// Renew extends the lease by LeaseTTL from now. ErrLeaseLost: it expired
// (it was not renewed in time) and may be another's.
func (s *Leases) Renew(ctx context.Context, l *Lease) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	sent := time.Now()
	rev, err := s.slots.Update(ctx, l.key, l.holder, l.rev)
	switch {
	case conflict(err):
		return ErrLeaseLost
	case err != nil:
		return s.unavailable("renew a run lease", err)
	}
	l.rev, l.sent = rev, sent
	return nil
}

// Release frees the lease for the next run. A lease that was lost
// meanwhile is left alone (it may be another's now).
func (s *Leases) Release(ctx context.Context, l *Lease) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err := s.slots.Update(ctx, l.key, nil, l.rev)
	if err != nil && !conflict(err) {
		return s.unavailable("release a run lease", err)
	}
	return nil
}

// Expires is when the holder must consider the lease gone unless renewed
// by then: LeaseTTL after the last successful write was sent.
func (l *Lease) Expires() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sent.Add(l.ttl)
}

// Key is the lease's key in the bucket ("task.i").
func (l *Lease) Key() string { return l.key }

// leaseWatch is a KV watch of one task's leases and the channels of the
// waiters it wakes.
type leaseWatch struct {
	subs map[chan struct{}]struct{}
	stop context.CancelFunc
}

// Freed returns a channel that receives when a lease of task is freed
// (released, or given up by a holder), until stop is called. The first
// waiter of a task on this node starts a KV watch of the task's keys, the
// last one's stop ends it. A lease that expires (its node died) makes no
// event: waiters also try again now and then, and see it then.
func (s *Leases) Freed(ctx context.Context, task string) (freed <-chan struct{}, stop func(), err error) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	w := s.watches[task]
	s.mu.Unlock()
	if w == nil {
		if w, err = s.startWatch(ctx, task); err != nil {
			return nil, nil, err
		}
	}
	s.mu.Lock()
	if cur := s.watches[task]; cur != nil && cur != w { // started by another waiter meanwhile
		w.stop()
		w = cur
	}
	s.watches[task] = w
	w.subs[ch] = struct{}{}
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(w.subs, ch)
		if len(w.subs) == 0 && s.watches[task] == w {
			w.stop()
			delete(s.watches, task)
		}
	}, nil
}

// startWatch starts the KV watch of task's leases, which signals the
// waiters' channels whenever a key of task is freed.
func (s *Leases) startWatch(ctx context.Context, task string) (*leaseWatch, error) {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	kw, err := s.slots.Watch(wctx, task+".*", jetstream.UpdatesOnly())
	if err != nil {
		cancel()
		return nil, s.unavailable("watch run leases", err)
	}
	w := &leaseWatch{subs: map[chan struct{}]struct{}{}, stop: cancel}
	go func() {
		defer func() { _ = kw.Stop() }()
		for {
			select {
			case <-wctx.Done():
				return
			case e, ok := <-kw.Updates():
				if !ok {
					return
				}
				if e != nil && (e.Operation() != jetstream.KeyValuePut || len(e.Value()) == 0) {
					s.wake(w)
				}
			}
		}
	}()
	return w, nil
}

// wake signals every waiter of w, without blocking.
func (s *Leases) wake(w *leaseWatch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range w.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
