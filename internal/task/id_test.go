package task

import (
	"errors"
	"strings"
	"testing"

	"github.com/spear-go/spear/internal/errdefs"
)

// TestValidateID: task ids are NATS subject tokens and KV keys (the
// character rule itself is tested in the execution package).
func TestValidateID(t *testing.T) {
	if err := ValidateID("Bench-wasm_echo-09"); err != nil {
		t.Fatalf("valid id refused: %v", err)
	}
	for _, bad := range []string{"", "a.b", "a*", "a>", "a b", strings.Repeat("x", 129)} {
		if err := ValidateID(bad); !errors.Is(err, errdefs.ErrInvalidArgument) || errdefs.CodeOf(err) != "INVALID_TASK_ID" {
			t.Errorf("ValidateID(%q) = %v, want INVALID_TASK_ID", bad, err)
		}
	}
}
