// Package testwait is how tests wait: on a condition, polled, with a
// generous bound that only guards against a hang (never a timing
// assertion: the machines that run the tests are small and noisy).
package testwait

import (
	"testing"
	"time"
)

// Bound is how long Until waits before failing the test.
const Bound = 20 * time.Second

// Until polls cond every 10 ms until it holds, failing the test with what
// it waited for after Bound.
func Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
