package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestBound(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{{0, 100 * time.Millisecond}, {1, 100 * time.Millisecond}, {2, 200 * time.Millisecond}, {4, 800 * time.Millisecond}, {5, time.Second}, {1000, time.Second}} {
		if got := b.Bound(tc.n); got != tc.want {
			t.Errorf("Bound(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}

// TestDelayFullJitter: every delay is within [0, bound], and they spread
// over the whole range (not only its upper half).
func TestDelayFullJitter(t *testing.T) {
	b := Backoff{Base: time.Second, Max: time.Second}
	low := 0
	for range 1000 {
		d := b.Delay(1)
		if d < 0 || d > time.Second {
			t.Fatalf("Delay = %v, out of [0, 1s]", d)
		}
		if d < 500*time.Millisecond {
			low++
		}
	}
	if low < 300 || low > 700 {
		t.Fatalf("%d of 1000 delays under half the bound: not spread over [0, bound]", low)
	}
}

func TestDo(t *testing.T) {
	b := Backoff{Base: time.Microsecond, Max: time.Microsecond}
	calls := 0
	err := b.Do(context.Background(), 0, func(n int) error {
		calls++
		if n != calls {
			t.Fatalf("attempt %d told %d", calls, n)
		}
		if n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Do = %v after %d calls, want success after 3", err, calls)
	}
	calls = 0
	err = b.Do(context.Background(), 2, func(int) error { calls++; return errors.New("never") })
	if err == nil || calls != 2 {
		t.Fatalf("Do with 2 attempts = %v after %d calls", err, calls)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls = 0
	err = Backoff{Base: time.Hour, Max: time.Hour}.Do(ctx, 0, func(int) error { calls++; return errors.New("x") })
	if err == nil || calls != 1 {
		t.Fatalf("Do with an ended context = %v after %d calls, want the first error", err, calls)
	}
}
