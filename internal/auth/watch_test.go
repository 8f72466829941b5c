package auth

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/testwait"
)

func TestWatch(t *testing.T) {
	for _, tt := range []struct {
		name     string
		interval time.Duration
		noEvents bool
	}{{"events", time.Hour, false}, {"polling", 20 * time.Millisecond, true}} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tokens")
			now := time.Now()
			keep, _ := Create(path, "keep", Read, 0, now)
			gone, _ := Create(path, "gone", Admin, 0, now)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			keys, err := watchWith(ctx, path, WatchOptions{Interval: tt.interval}, tt.noEvents)
			if err != nil {
				t.Fatal(err)
			}
			ok := func(tok string) bool { _, err := keys.Authorize([]string{"Bearer " + tok}, Read); return err == nil }
			if !ok(keep) || !ok(gone) {
				t.Fatal("tokens of the file refused")
			}
			if _, err := Revoke(path, "gone"); err != nil {
				t.Fatal(err)
			}
			testwait.Until(t, "a revoked token is refused", func() bool { return !ok(gone) })
			added, _ := Create(path, "added", Invoke, 0, now)
			testwait.Until(t, "a new token is accepted", func() bool { return ok(added) })
			if !ok(keep) {
				t.Fatal("a kept token is refused")
			}
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			testwait.Until(t, "no token once the file is gone", func() bool { return !ok(keep) && !ok(added) })
		})
	}
}

func TestWatchMissingFile(t *testing.T) {
	_, err := Watch(t.Context(), filepath.Join(t.TempDir(), "none"), WatchOptions{})
	if err == nil {
		t.Fatal("a missing token file was accepted")
	}
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, []byte("not json\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Watch(t.Context(), bad, WatchOptions{}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("a malformed token file: %v", err)
	}
}
