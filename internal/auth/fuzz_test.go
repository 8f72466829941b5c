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
			if len(header) >= 8 && strings.Contains(err.Error(), header) {
				t.Fatalf("the error %q repeats the header", err)
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
