package executor

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// waitWaiters blocks until s has n waiters.
func waitWaiters(t *testing.T, s *slots, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, w := s.state(); w == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %d slot waiters", n)
		}
		time.Sleep(time.Millisecond)
	}
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func TestSlotsPriorityOrder(t *testing.T) {
	tests := []struct {
		name    string
		waiters []int32 // priorities, in arrival order
		want    string  // grant order, by arrival index
	}{
		{"fifo within a priority", []int32{0, 0, 0}, "0,1,2"},
		{"higher first", []int32{0, 5, 1}, "1,2,0"},
		{"mixed", []int32{0, 5, 0, 5, -1, 9}, "5,1,3,0,2,4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := newSlots(1)
			if err := s.acquire(ctx, claim{}); err != nil {
				t.Fatal(err)
			}
			granted := make(chan int)
			for i, p := range tc.waiters {
				go func() {
					if err := s.acquire(ctx, claim{prio: p}); err != nil {
						t.Errorf("acquire: %v", err)
						return
					}
					granted <- i
				}()
				waitWaiters(t, s, i+1) // fixes the arrival order
			}
			var order []string
			for range tc.waiters {
				s.release("") // hands the slot to the next waiter
				i := recv(t, granted, "a grant")
				order = append(order, string(rune('0'+i)))
			}
			if got := strings.Join(order, ","); got != tc.want {
				t.Fatalf("grant order %s, want %s", got, tc.want)
			}
			s.release("")
			if free, waiting := s.state(); free != 1 || waiting != 0 {
				t.Fatalf("state after all released = %d free, %d waiting", free, waiting)
			}
		})
	}
}

func TestSlotsWaiterGivesUp(t *testing.T) {
	s := newSlots(1)
	if err := s.acquire(context.Background(), claim{}); err != nil {
		t.Fatal(err)
	}
	cause := errors.New("caller left")
	ctx, cancel := context.WithCancelCause(context.Background())
	gaveUp := make(chan error)
	go func() { gaveUp <- s.acquire(ctx, claim{prio: 10}) }()
	waitWaiters(t, s, 1)

	granted := make(chan struct{})
	go func() {
		if err := s.acquire(context.Background(), claim{}); err != nil {
			t.Errorf("acquire: %v", err)
		}
		close(granted)
	}()
	waitWaiters(t, s, 2)

	cancel(cause)
	if err := recv(t, gaveUp, "the cancelled waiter"); !errors.Is(err, cause) {
		t.Fatalf("cancelled acquire returned %v, want the context's cause", err)
	}
	if free, waiting := s.state(); free != 0 || waiting != 1 {
		t.Fatalf("state after give-up = %d free, %d waiting; want 0, 1", free, waiting)
	}
	// The slot goes to the remaining waiter, not the one that left.
	s.release("")
	recv(t, granted, "the remaining waiter")
	if free, waiting := s.state(); free != 0 || waiting != 0 {
		t.Fatalf("state after hand-over = %d free, %d waiting; want 0, 0", free, waiting)
	}
	s.release("")
	if free, _ := s.state(); free != 1 {
		t.Fatalf("free = %d after the last release, want 1", free)
	}
}

func TestSlotsReleaseSignalsFreed(t *testing.T) {
	s := newSlots(2)
	for range 2 {
		if err := s.acquire(context.Background(), claim{}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-s.freed:
		t.Fatal("freed signalled before any release")
	default:
	}
	s.release("")
	s.release("") // the signal does not block when nobody listens
	recv(t, s.freed, "the freed signal")
	if free, waiting := s.state(); free != 2 || waiting != 0 {
		t.Fatalf("state = %d free, %d waiting; want 2, 0", free, waiting)
	}
}

func TestSlotsCancelledWithFreeSlot(t *testing.T) {
	// A free slot is granted at once even to a waiter whose context ended;
	// the run itself then sees the context.
	s := newSlots(1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.acquire(ctx, claim{}); err != nil {
		t.Fatalf("acquire with a free slot: %v", err)
	}
	if err := s.acquire(ctx, claim{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("acquire with no free slot and an ended context: %v", err)
	}
	if free, waiting := s.state(); free != 0 || waiting != 0 {
		t.Fatalf("state = %d free, %d waiting; want 0, 0", free, waiting)
	}
}

// TestSlotsTaskConcurrency: a task at its max_concurrency waits while
// other tasks' waiters get the free slots.
func TestSlotsTaskConcurrency(t *testing.T) {
	ctx := context.Background()
	s := newSlots(3)
	capped := claim{task: "capped", limit: 1}
	if err := s.acquire(ctx, capped); err != nil {
		t.Fatal(err)
	}
	second := make(chan struct{})
	go func() {
		if err := s.acquire(ctx, capped); err != nil {
			t.Errorf("acquire: %v", err)
		}
		close(second)
	}()
	waitWaiters(t, s, 1)
	// Two slots are free, yet the capped task's second execution waits;
	// another task's goes ahead.
	if err := s.acquire(ctx, claim{task: "other"}); err != nil {
		t.Fatal(err)
	}
	if free, waiting := s.state(); free != 1 || waiting != 1 {
		t.Fatalf("state = %d free, %d waiting; want 1, 1", free, waiting)
	}
	s.release("capped")
	recv(t, second, "the capped task's second execution")
}

// TestSlotsOldestShare: under a steady stream of high priority work, every
// oldestShare-th slot still goes to the oldest (low priority) waiter.
func TestSlotsOldestShare(t *testing.T) {
	ctx := context.Background()
	s := newSlots(1)
	if err := s.acquire(ctx, claim{}); err != nil {
		t.Fatal(err)
	}
	low := make(chan struct{})
	go func() {
		if err := s.acquire(ctx, claim{prio: -5, age: 1}); err != nil {
			t.Errorf("acquire: %v", err)
		}
		close(low)
	}()
	waitWaiters(t, s, 1)
	granted := 0
	for granted < 2*oldestShare {
		// Keep a newer high priority waiter in line at every release.
		high := make(chan struct{})
		go func() {
			if err := s.acquire(ctx, claim{prio: 10, age: int64(100 + granted)}); err != nil {
				t.Errorf("acquire: %v", err)
			}
			close(high)
		}()
		waitWaiters(t, s, 2)
		s.release("")
		granted++
		select {
		case <-low:
			// The low priority waiter got its share; drain the high one.
			s.release("")
			recv(t, high, "the high priority waiter")
			s.release("")
			return
		case <-high:
		}
	}
	t.Fatalf("the low priority waiter was starved through %d grants", granted)
}

// TestSlotsTryAcquire: the fast path takes a slot only when one is free,
// nobody waits and the task is below its limit; what it takes is released
// like any other slot.
func TestSlotsTryAcquire(t *testing.T) {
	ctx := context.Background()
	s := newSlots(2)
	capped := claim{task: "capped", limit: 1}
	steps := []struct {
		name string
		c    claim
		want bool
	}{
		{"free slot", capped, true},
		{"task at its limit", capped, false},
		{"other task, last slot", claim{task: "other"}, true},
		{"no free slot", claim{task: "third"}, false},
	}
	for _, st := range steps {
		if got := s.tryAcquire(st.c); got != st.want {
			t.Fatalf("%s: tryAcquire = %v, want %v", st.name, got, st.want)
		}
	}
	// A waiter in line: a freed slot goes to it, not to the fast path.
	waited := make(chan struct{})
	go func() {
		if err := s.acquire(ctx, claim{task: "third"}); err != nil {
			t.Errorf("acquire: %v", err)
		}
		close(waited)
	}()
	waitWaiters(t, s, 1)
	if s.tryAcquire(claim{task: "fourth"}) {
		t.Fatal("tryAcquire jumped a waiter")
	}
	s.release("other")
	recv(t, waited, "the waiter")
	s.release("capped")
	if !s.tryAcquire(capped) {
		t.Fatal("tryAcquire after release: no slot")
	}
	if free, waiting := s.state(); free != 0 || waiting != 0 {
		t.Fatalf("state = %d free, %d waiting; want 0, 0", free, waiting)
	}
}
