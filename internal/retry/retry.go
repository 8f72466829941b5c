// Package retry is Spear's one way to wait between attempts: exponential
// backoff with full jitter — each wait is random between zero and an
// exponentially growing bound, capped — so that many clients retrying the
// same thing spread out instead of arriving together.
package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is a retry schedule: before retry n (from 1) the bound is
// Base·2^(n-1), at most Max.
type Backoff struct {
	Base, Max time.Duration
}

// Bound is the longest wait before retry n.
func (b Backoff) Bound(n int) time.Duration {
	if n < 1 {
		n = 1
	}
	d := b.Base
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// Delay is the wait before retry n: random in [0, Bound(n)].
func (b Backoff) Delay(n int) time.Duration {
	return rand.N(b.Bound(n) + 1)
}

// Permanent wraps err so that Do returns it (unwrapped) at once: no
// attempt can succeed.
func Permanent(err error) error { return &permanent{err} }

type permanent struct{ err error }

func (p *permanent) Error() string { return p.err.Error() }

// Do runs op until it succeeds, ctx ends, or maxAttempts attempts (0: no
// bound) have failed, waiting Delay between attempts; it returns op's last
// error. op is told which attempt it is, from 1.
func (b Backoff) Do(ctx context.Context, maxAttempts int, op func(attempt int) error) error {
	for attempt := 1; ; attempt++ {
		err := op(attempt)
		if p, ok := err.(*permanent); ok {
			return p.err
		}
		if err == nil || (maxAttempts > 0 && attempt >= maxAttempts) {
			return err
		}
		if !Sleep(ctx, b.Delay(attempt)) {
			return err
		}
	}
}

// Sleep waits d; it reports false when ctx ended first.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
