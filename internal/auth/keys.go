package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"sync"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
)

// Keys are the tokens a node accepts: the entries of its token file, as
// last read. Safe for concurrent use.
type Keys struct {
	now func() time.Time

	mu   sync.RWMutex
	keys []key
}

// key is an entry ready to check: its hash decoded.
type key struct {
	name    string
	scope   Scope
	sum     [sha256.Size]byte
	expires time.Time
}

// NewKeys returns Keys holding entries; now (time.Now when nil) tells
// whether a token expired.
func NewKeys(entries []Entry, now func() time.Time) *Keys {
	if now == nil {
		now = time.Now
	}
	k := &Keys{now: now}
	k.Set(entries)
	return k
}

// Set replaces the tokens accepted. Invalid entries are left out.
func (k *Keys) Set(entries []Entry) {
	keys := make([]key, 0, len(entries))
	for _, e := range entries {
		if e.check() != nil {
			continue
		}
		sc, _ := ParseScope(e.Scope)
		kk := key{name: e.Name, scope: sc, expires: e.Expires}
		_, _ = hex.Decode(kk.sum[:], []byte(e.SHA256))
		keys = append(keys, kk)
	}
	k.mu.Lock()
	k.keys = keys
	k.mu.Unlock()
}

// Len is how many tokens are accepted.
func (k *Keys) Len() int {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return len(k.keys)
}

// Identity is who made a call: the name and scope of its token.
type Identity struct {
	Name  string
	Scope Scope
}

// Authorize checks a call that needs scope need, given its Authorization
// header values: AUTH_REQUIRED without a token, AUTH_INVALID for a token
// that is malformed, unknown (or revoked) or expired, AUTH_SCOPE when the
// token's scope does not include need. A Public call passes with or
// without a token. Tokens are compared by their sha256, in constant time,
// against every entry.
func (k *Keys) Authorize(values []string, need Scope) (Identity, error) {
	if need == Public {
		return Identity{}, nil
	}
	token, err := ParseAuthorization(values)
	if err != nil {
		return Identity{}, err
	}
	sum := sha256.Sum256([]byte(token))
	k.mu.RLock()
	var (
		found key
		match int
	)
	for _, kk := range k.keys {
		eq := subtle.ConstantTimeCompare(sum[:], kk.sum[:])
		if eq == 1 && match == 0 {
			found = kk
		}
		match |= eq
	}
	k.mu.RUnlock()
	if match == 0 {
		return Identity{}, errdefs.AuthInvalid.New("unknown or revoked token")
	}
	if !found.expires.IsZero() && !k.now().Before(found.expires) {
		return Identity{}, errdefs.AuthInvalid.New("token %q expired at %s", found.name, found.expires.UTC().Format(time.RFC3339))
	}
	id := Identity{Name: found.name, Scope: found.scope}
	if !found.scope.Allows(need) {
		return id, errdefs.AuthScope.New("token %q has scope %s; this call needs %s", found.name, found.scope, need)
	}
	return id, nil
}
