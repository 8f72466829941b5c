package auth

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
)

// Create makes a new token named name with scope in the token file at path
// (created if missing) and returns it: the file keeps only its hash. A
// positive ttl makes it expire ttl after now. Names are unique in a file.
func Create(path, name string, scope Scope, ttl time.Duration, now time.Time) (string, error) {
	if err := ValidName(name); err != nil {
		return "", err
	}
	if scope < Read || scope > Admin {
		return "", fmt.Errorf("scope %v: want read, invoke or admin: %w", scope, errdefs.ErrInvalidArgument)
	}
	if ttl < 0 {
		return "", fmt.Errorf("expiry %v: want a positive duration: %w", ttl, errdefs.ErrInvalidArgument)
	}
	token, err := NewToken()
	if err != nil {
		return "", err
	}
	e := Entry{Name: name, Scope: scope.String(), SHA256: Hash(token), Created: now.UTC().Truncate(time.Second)}
	if ttl > 0 {
		e.Expires = now.Add(ttl).UTC().Truncate(time.Second)
	}
	err = Update(path, func(entries []Entry) ([]Entry, error) {
		for _, old := range entries {
			if strings.EqualFold(old.Name, name) {
				return nil, fmt.Errorf("a token named %q exists: revoke it first, or pick another name: %w", old.Name, errdefs.ErrAlreadyExists)
			}
		}
		return append(entries, e), nil
	})
	if err != nil {
		return "", err
	}
	return token, nil
}

// Revoke removes the token named name from the token file at path. It
// reports whether there was one.
func Revoke(path, name string) (bool, error) {
	if _, err := os.Stat(path); err != nil {
		return false, fmt.Errorf("token file: %w", err)
	}
	found := false
	err := Update(path, func(entries []Entry) ([]Entry, error) {
		kept := entries[:0]
		for _, e := range entries {
			if strings.EqualFold(e.Name, name) {
				found = true
				continue
			}
			kept = append(kept, e)
		}
		return kept, nil
	})
	return found, err
}
