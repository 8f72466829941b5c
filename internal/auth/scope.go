// Package auth is Spear's authentication: bearer tokens with a scope
// (read, invoke, admin), kept hashed (sha256) in a token file, checked in
// constant time, and never logged.
//
// Scopes are ordered: admin includes invoke, which includes read. The
// token file holds one JSON object per line (see Entry); the node reloads
// it when it changes (see Watch), so a revoked token stops working without
// a restart.
package auth

import (
	"fmt"
	"strings"

	"github.com/spear-go/spear/internal/errdefs"
)

// Scope is what a token allows, or what a call needs. The zero Scope is
// not valid: a call that needs nothing says Public.
type Scope int

// Scopes, each including the ones before it.
const (
	// Public calls need no token (health probes, reflection).
	Public Scope = iota + 1
	// Read: get, list, wait, watch, stats, output, metrics.
	Read
	// Invoke: invoke, stream, attach and cancel executions; and Read.
	Invoke
	// Admin: register, update and delete tasks, upload artifacts, change
	// limits, requeue; and Invoke.
	Admin
)

// TokenScopes are the scopes a token can have, in increasing order.
func TokenScopes() []Scope { return []Scope{Read, Invoke, Admin} }

func (s Scope) String() string {
	switch s {
	case Public:
		return "public"
	case Read:
		return "read"
	case Invoke:
		return "invoke"
	case Admin:
		return "admin"
	}
	return fmt.Sprintf("scope(%d)", int(s))
}

// ParseScope reads a token's scope: read, invoke or admin.
func ParseScope(s string) (Scope, error) {
	for _, sc := range TokenScopes() {
		if strings.EqualFold(s, sc.String()) {
			return sc, nil
		}
	}
	return 0, fmt.Errorf("scope %q: want read, invoke or admin: %w", s, errdefs.ErrInvalidArgument)
}

// Allows says whether a token of scope s may make a call that needs need.
func (s Scope) Allows(need Scope) bool {
	if need == Public {
		return true
	}
	return s >= Read && s <= Admin && need >= Read && s >= need
}
