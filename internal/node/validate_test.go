package node

import (
	"errors"
	"strings"
	"testing"

	"github.com/spear-go/spear/internal/errdefs"
)

// TestValidate: settings that make no sense are refused before anything
// starts, with the flag named.
func TestValidate(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		cfg  Config
		want string // "" valid; else a fragment of the error
	}{
		{"defaults", Config{}, ""},
		{"samples dir", Config{Samples: dir}, ""},
		{"negative workers", Config{Workers: -1}, "--workers -1"},
		{"negative store budget", Config{MaxStoreBytes: -5}, "--max-store-bytes -5"},
		{"samples missing", Config{Samples: dir + "/nonexistent"}, "--samples"},
		{"samples a file", Config{Samples: "validate_test.go"}, "--samples"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("validate: %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, errdefs.ErrInvalidArgument)):
				t.Fatalf("validate: %v, want an invalid-argument error naming %q", err, tc.want)
			}
		})
	}
}
