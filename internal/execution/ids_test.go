package execution

import (
	"testing"
	"time"
)

// TestIDsSortAsMade: ids made in one millisecond, or after the clock
// stepped back, sort in the order they were made; an id made ahead is
// current until an execution made after it precedes the caller's.
func TestIDsSortAsMade(t *testing.T) {
	at := time.Unix(1_700_000_000, 0)
	g := NewIDs(func() time.Time { return at })
	var ids []string
	for i := range 1000 {
		if i == 500 {
			at = at.Add(-time.Second) // stepped back
		}
		ids = append(ids, g.New())
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Fatalf("id %d %s does not sort after %s", i, ids[i], ids[i-1])
		}
		if err := ValidateID(ids[i]); err != nil {
			t.Fatal(err)
		}
	}
	ahead := g.Ahead()
	mine := g.New() // the call taking ahead gives up its own
	if !g.Current(ahead) {
		t.Fatal("an id made ahead, then the caller's: not current")
	}
	g.New() // another execution, then another call
	g.New()
	if g.Current(ahead) {
		t.Fatalf("id %s made before execution %s counts as current", ahead, mine)
	}
	if got := successor("00ff"); got != "0100" {
		t.Fatalf("successor(00ff) = %s", got)
	}
}
