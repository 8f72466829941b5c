package auth

import (
	"strings"
	"testing"

	"github.com/spear-go/spear/internal/errdefs"
)

// FuzzAuthorization: the Authorization header parser never panics, and it
// accepts exactly one form: optional spaces or tabs, "Bearer" in any case,
// one or more spaces, a well-formed token, optional spaces or tabs. Every
// refusal is AUTH_REQUIRED (nothing sent) or AUTH_INVALID, and never
// repeats what was sent.
func FuzzAuthorization(f *testing.F) {
	tok := "spear_" + strings.Repeat("A", 43)
	for _, s := range []string{"", " ", "Bearer " + tok, "bearer  " + tok + "\t", "Basic " + tok, tok, "Bearer",
		"Bearer " + tok[:48], "Bearer " + tok + "=", "BEARER\t" + tok, "Bearer " + tok + " x", "Bearer \x00" + tok} {
		f.Add(s, false)
	}
	f.Add("Bearer "+tok, true)
	f.Fuzz(func(t *testing.T, header string, twice bool) {
		values := []string{header}
		if twice {
			values = append(values, header)
		}
		got, err := ParseAuthorization(values)
		if err != nil {
			if !errdefs.AuthRequired.Is(err) && !errdefs.AuthInvalid.Is(err) {
				t.Fatalf("error of another code: %v", err)
			}
			if r := tokenRun(header); len(r) >= 8 && strings.Contains(err.Error(), r) {
				t.Fatalf("the error %q repeats what was sent", err)
			}
			return
		}
		if twice {
			t.Fatal("two headers accepted")
		}
		if !WellFormed(got) {
			t.Fatalf("accepted a malformed token %q", got)
		}
		v := strings.Trim(header, " \t")
		if len(v) < 7 || !strings.EqualFold(v[:7], "bearer ") || strings.TrimLeft(v[7:], " ") != got {
			t.Fatalf("accepted %q, which is not 'Bearer <token>'", header)
		}
	})
}

// tokenRun is the longest run of base64url characters after a token
// prefix in s: what a refusal must never repeat.
func tokenRun(s string) string {
	best := ""
	for {
		i := strings.Index(s, TokenPrefix)
		if i < 0 {
			return best
		}
		s = s[i+len(TokenPrefix):]
		n := 0
		for n < len(s) && isBase64URL(s[n]) {
			n++
		}
		if n > len(best) {
			best = s[:n]
		}
	}
}
