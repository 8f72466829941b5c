package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/testwait"
)

// openLeaseStore opens an embedded store whose leases live ttl without
// renewal.
func openLeaseStore(t *testing.T, ttl time.Duration) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, Options{DataDir: t.TempDir(), LeaseTTL: ttl})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// TestLeases runs scripts of lease operations on one task against a
// semaphore of the given limit. Steps:
//
//	+a   take a lease, as a (there must be a free one)
//	+-   take a lease: all are held
//	-a   release a
//	ra   renew a
//	Ra   renew a: it is lost
//	~a   wait until a lease is free (one expired), then take it as a
//	keep renew every held lease for two lease TTLs
func TestLeases(t *testing.T) {
	const ttl = time.Second
	tests := []struct {
		name  string
		limit int
		steps string
	}{
		{"one lease", 1, "+a +- -a +b +-"},
		{"as many as the limit", 3, "+a +b +c +- -b +d +- -a -c -d +e +f +g +-"},
		{"a renewed lease is kept", 2, "+a ra +b ra rb +- -a +c +-"},
		{"renewal keeps leases past their TTL", 2, "+a +b keep +- -b +c"},
		{"an expired lease is free, and lost to its holder", 1, "+a ~b Ra -a +- -b +c"},
		{"the release of a lost lease frees nothing", 2, "+a +b ~c ~d Ra Rb -a -b +-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openLeaseStore(t, ttl)
			ctx := testCtx(t)
			task := strings.ReplaceAll(tt.name, " ", "-")
			task = strings.ReplaceAll(task, ",", "")
			held := map[string]*Lease{}
			take := func() *Lease {
				t.Helper()
				l, err := s.Leases.TryAcquire(ctx, task, tt.limit, "test")
				if err != nil {
					t.Fatalf("TryAcquire: %v", err)
				}
				return l
			}
			for step := range strings.FieldsSeq(tt.steps) {
				op, name := step[:1], step[1:]
				switch {
				case step == "keep":
					keepRenewed(t, s, held, 2*ttl)
				case step == "+-":
					if l := take(); l != nil {
						t.Fatalf("step %s: took %s; want all %d held", step, l.Key(), tt.limit)
					}
				case op == "+":
					l := take()
					if l == nil {
						t.Fatalf("step %s: no free lease", step)
					}
					for other, h := range held {
						if h.Key() == l.Key() {
							t.Fatalf("step %s: took %s, which %s holds", step, l.Key(), other)
						}
					}
					held[name] = l
				case op == "~":
					testwait.Until(t, "a lease to expire", func() bool { held[name] = take(); return held[name] != nil })
				case op == "-":
					if err := s.Leases.Release(ctx, held[name]); err != nil {
						t.Fatalf("step %s: %v", step, err)
					}
					delete(held, name)
				case op == "r":
					if err := s.Leases.Renew(ctx, held[name]); err != nil {
						t.Fatalf("step %s: %v", step, err)
					}
				case op == "R":
					if err := s.Leases.Renew(ctx, held[name]); !errors.Is(err, ErrLeaseLost) {
						t.Fatalf("step %s: Renew = %v; want ErrLeaseLost", step, err)
					}
				default:
					t.Fatalf("bad step %q", step)
				}
			}
		})
	}
}

// keepRenewed renews the held leases every quarter TTL for d.
func keepRenewed(t *testing.T, s *Store, held map[string]*Lease, d time.Duration) {
	t.Helper()
	ctx := testCtx(t)
	tick := time.NewTicker(s.Leases.TTL() / 4)
	defer tick.Stop()
	for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
		for name, l := range held {
			if err := s.Leases.Renew(ctx, l); err != nil {
				t.Fatalf("renewing %s: %v", name, err)
			}
		}
	}
}

// TestLeasesConcurrent: of many callers that try at once, exactly limit
// get a lease, each a different one.
func TestLeasesConcurrent(t *testing.T) {
	s := openLeaseStore(t, 0)
	for _, limit := range []int{1, 4} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			ctx := testCtx(t)
			task := fmt.Sprintf("concurrent%d", limit)
			var mu sync.Mutex
			keys := map[string]bool{}
			var wg sync.WaitGroup
			for range 16 {
				wg.Go(func() {
					l, err := s.Leases.TryAcquire(ctx, task, limit, "test")
					if err != nil {
						t.Error(err)
						return
					}
					if l != nil {
						mu.Lock()
						defer mu.Unlock()
						if keys[l.Key()] {
							t.Errorf("lease %s taken twice", l.Key())
						}
						keys[l.Key()] = true
					}
				})
			}
			wg.Wait()
			if len(keys) != limit {
				t.Fatalf("%d of 16 callers took a lease (%v); want %d", len(keys), keys, limit)
			}
		})
	}
}

// TestLeasesFreed: a waiter's channel receives when a lease of its task is
// released, and not for another task's.
func TestLeasesFreed(t *testing.T) {
	s := openLeaseStore(t, 0)
	ctx := testCtx(t)
	l, err := s.Leases.TryAcquire(ctx, "watched", 1, "test")
	if err != nil || l == nil {
		t.Fatalf("TryAcquire = %v, %v", l, err)
	}
	other, err := s.Leases.TryAcquire(ctx, "other", 1, "test")
	if err != nil || other == nil {
		t.Fatalf("TryAcquire = %v, %v", other, err)
	}
	freed, stop, err := s.Leases.Freed(ctx, "watched")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if err := s.Leases.Release(ctx, other); err != nil {
		t.Fatal(err)
	}
	if err := s.Leases.Renew(ctx, l); err != nil {
		t.Fatal(err)
	}
	if err := s.Leases.Release(ctx, l); err != nil {
		t.Fatal(err)
	}
	select {
	case <-freed:
	case <-time.After(10 * time.Second):
		t.Fatal("no wake-up within 10 s of the release")
	}
	select {
	case <-freed:
		t.Fatal("woken twice: by another task's release or a renewal")
	case <-time.After(100 * time.Millisecond):
	}
	stop()
	s.Leases.mu.Lock()
	defer s.Leases.mu.Unlock()
	if len(s.Leases.watches) != 0 {
		t.Fatalf("%d watches left after the last waiter stopped", len(s.Leases.watches))
	}
}

// TestEnqueueWithin: concurrent submissions to a task with a queue limit
// store exactly that many; the rest are refused, and other tasks are not
// counted. Once one leaves the queue, one more fits.
func TestEnqueueWithin(t *testing.T) {
	s := openStore(t, t.TempDir(), 0)
	for _, limit := range []int64{1, 5} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			ctx := testCtx(t)
			taskID := fmt.Sprintf("within%d", limit)
			if _, err := s.Queue.Enqueue(ctx, &execution.Spec{ExecutionID: taskID + "-other", TaskID: "unrelated" + taskID, Runtime: "process", CreatedAt: time.Now()}); err != nil {
				t.Fatal(err)
			}
			accepted := enqueueAtOnce(t, s, taskID, 20, limit)
			if accepted != limit {
				t.Fatalf("%d of 20 accepted; want %d", accepted, limit)
			}
			if n, err := s.Queue.OfTask(ctx, taskID); err != nil || n != limit {
				t.Fatalf("OfTask = %d, %v; want %d", n, err, limit)
			}
			for { // one of the task's leaves the queue
				d := fetchOne(t, s, 5*time.Second)
				if err := d.Ack(ctx); err != nil {
					t.Fatal(err)
				}
				if d.Spec.TaskID == taskID {
					break
				}
			}
			testwait.Until(t, "a place in the queue", func() bool {
				_, err := s.Queue.EnqueueWithin(ctx, &execution.Spec{ExecutionID: taskID + "-late", TaskID: taskID, Runtime: "process", CreatedAt: time.Now()}, limit)
				return err == nil
			})
			for d := fetchOne(t, s, 100*time.Millisecond); d != nil; d = fetchOne(t, s, 100*time.Millisecond) {
				_ = d.Ack(ctx)
			}
		})
	}
}

// enqueueAtOnce makes n concurrent EnqueueWithin calls for taskID and
// returns how many were accepted; the others must be ErrQueueFull.
func enqueueAtOnce(t *testing.T, s *Store, taskID string, n int, limit int64) int64 {
	t.Helper()
	ctx := testCtx(t)
	var mu sync.Mutex
	var accepted int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			spec := &execution.Spec{ExecutionID: fmt.Sprintf("%s-%d", taskID, i), TaskID: taskID, Runtime: "process", CreatedAt: time.Now()}
			_, err := s.Queue.EnqueueWithin(ctx, spec, limit)
			switch {
			case err == nil:
				mu.Lock()
				accepted++
				mu.Unlock()
			case !errors.Is(err, ErrQueueFull):
				t.Errorf("EnqueueWithin: %v", err)
			}
		})
	}
	wg.Wait()
	return accepted
}

// TestLimitsAcrossCluster: three stores, each with its embedded server in
// one JetStream cluster keeping 3 copies (as three nodes): of callers at
// all three at once, exactly max_concurrency get a lease and exactly
// max_queued executions are queued.
func TestLimitsAcrossCluster(t *testing.T) {
	const limit, perStore = 2, 6
	stores := openCluster(t, 3, 3)
	ctx := testCtx(t)
	var mu sync.Mutex
	keys := map[string]int{}
	var accepted int64
	var wg sync.WaitGroup
	for i, s := range stores {
		for j := range perStore {
			wg.Go(func() {
				l, err := s.Leases.TryAcquire(ctx, "spread", limit, fmt.Sprintf("n%d", i+1))
				if err != nil {
					t.Errorf("TryAcquire at n%d: %v", i+1, err)
				}
				spec := &execution.Spec{ExecutionID: fmt.Sprintf("spread-%d-%d", i, j), TaskID: "spread", Runtime: "process", CreatedAt: time.Now()}
				_, qerr := s.Queue.EnqueueWithin(ctx, spec, limit+3)
				if qerr != nil && !errors.Is(qerr, ErrQueueFull) {
					t.Errorf("EnqueueWithin at n%d: %v", i+1, qerr)
				}
				mu.Lock()
				defer mu.Unlock()
				if l != nil {
					keys[l.Key()]++
				}
				if qerr == nil {
					accepted++
				}
			})
		}
	}
	wg.Wait()
	if len(keys) != limit {
		t.Errorf("leases taken: %v; want %d different ones, once each", keys, limit)
	}
	for k, n := range keys {
		if n != 1 {
			t.Errorf("lease %s taken %d times", k, n)
		}
	}
	if accepted != limit+3 {
		t.Errorf("%d of %d submissions queued; want %d", accepted, 3*perStore, limit+3)
	}
}
