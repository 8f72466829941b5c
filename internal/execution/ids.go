package execution

import (
	"encoding/hex"
	"sync"
	"time"
)

// IDs makes execution ids of NewID's form that sort in the order it makes
// them (two in one millisecond, or a clock stepped back, still sort). A
// node makes all its ids with one, executions' (New) and those made ahead
// of their execution (Ahead: a process spare's), so that an id made ahead
// can be checked to sort after every execution made before it (Current).
type IDs struct {
	now func() time.Time

	mu   sync.Mutex
	last string // the latest id made
	// lastNew and prevNew are the latest two ids New made.
	lastNew, prevNew string
}

// NewIDs returns ids made at the times now gives.
func NewIDs(now func() time.Time) *IDs { return &IDs{now: now} }

// New returns the id of a new execution, greater than every id g made
// before.
func (g *IDs) New() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	id := g.next()
	g.prevNew, g.lastNew = g.lastNew, id
	return id
}

// Ahead returns an id for an execution to come, greater than every id g
// made before.
func (g *IDs) Ahead() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.next()
}

// Current reports whether id, made by Ahead, still sorts after every
// execution made before the latest one (the caller's own, which it gives
// up for id): the ids keep creation order if that execution takes id.
func (g *IDs) Current(id string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return id > g.prevNew
}

// next returns an id greater than g.last, and makes it g.last. g.mu is
// held.
func (g *IDs) next() string {
	id := NewID(g.now())
	if id <= g.last {
		id = successor(g.last)
	}
	g.last = id
	return id
}

// successor returns the id after id (hex, incremented as a number).
func successor(id string) string {
	b, err := hex.DecodeString(id)
	if err != nil {
		return id
	}
	for i := len(b) - 1; i >= 0; i-- {
		if b[i]++; b[i] != 0 {
			break
		}
	}
	return hex.EncodeToString(b)
}
