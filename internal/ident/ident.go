// Package ident holds the one rule for Spear's identifiers (task and
// execution ids): they are used as NATS subject tokens and KV keys.
package ident

import "strings"

// Valid reports whether id is 1-128 characters of A-Z, a-z, 0-9, '_' or
// '-'; checked on every request, so no regexp.
func Valid(id string) bool {
	return len(id) > 0 && len(id) <= 128 && strings.IndexFunc(id, func(r rune) bool {
		return !(r == '_' || r == '-' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9')
	}) < 0
}

// Rule says the rule in words, for error messages.
const Rule = "1-128 characters of A-Z, a-z, 0-9, '_' or '-'"
