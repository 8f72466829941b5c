package execution

import (
	"strings"
	"testing"
	"time"
)

func TestValidateID(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"a", true},
		{"Bench-wasm_echo-09", true},
		{strings.Repeat("x", 128), true},
		{"", false},
		{strings.Repeat("x", 129), false},
		{"a.b", false},
		{"a b", false},
		{"a*", false},
		{"a>", false},
		{"é", false},
		{"a\x00", false},
	} {
		if err := ValidateID(tc.id); (err == nil) != tc.ok {
			t.Errorf("ValidateID(%q) = %v, want ok=%v", tc.id, err, tc.ok)
		}
	}
}

func TestNewIDSortsByTime(t *testing.T) {
	at := time.UnixMilli(0x0123456789ab)
	id := NewID(at)
	if len(id) != 22 || !strings.HasPrefix(id, "0123456789ab") || ValidateID(id) != nil {
		t.Fatalf("NewID = %q, want 22 hex digits starting with the milliseconds 0123456789ab", id)
	}
	if later := NewID(at.Add(time.Millisecond)); later <= id {
		t.Fatalf("NewID a millisecond later = %q, not after %q", later, id)
	}
	if again := NewID(at); again == id {
		t.Fatalf("two ids of the same millisecond are equal: %q", id)
	}
}
