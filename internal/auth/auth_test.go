package auth

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
)

func TestScopeAllows(t *testing.T) {
	tests := []struct {
		have, need Scope
		want       bool
	}{
		{Read, Public, true}, {Read, Read, true}, {Read, Invoke, false}, {Read, Admin, false},
		{Invoke, Read, true}, {Invoke, Invoke, true}, {Invoke, Admin, false},
		{Admin, Read, true}, {Admin, Invoke, true}, {Admin, Admin, true},
		{0, Read, false}, {Public, Read, false}, {Scope(9), Read, false}, {Admin, 0, false},
	}
	for _, tt := range tests {
		if got := tt.have.Allows(tt.need); got != tt.want {
			t.Errorf("%v.Allows(%v) = %v, want %v", tt.have, tt.need, got, tt.want)
		}
	}
	for _, s := range []string{"read", "INVOKE", "Admin"} {
		if _, err := ParseScope(s); err != nil {
			t.Errorf("ParseScope(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "public", "root", "admin "} {
		if _, err := ParseScope(s); err == nil {
			t.Errorf("ParseScope(%q) accepted", s)
		}
	}
}

func TestNewToken(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tok, err := NewToken()
		if err != nil {
			t.Fatal(err)
		}
		if !WellFormed(tok) || len(tok) != 49 || seen[tok] {
			t.Fatalf("token %q: well formed %v, length %d, seen %v", tok, WellFormed(tok), len(tok), seen[tok])
		}
		seen[tok] = true
	}
}

func TestParseAuthorization(t *testing.T) {
	tok, _ := NewToken()
	tests := []struct {
		name   string
		values []string
		code   errdefs.Code // zero: accepted
	}{
		{"bearer", []string{"Bearer " + tok}, errdefs.Code{}},
		{"lower case scheme", []string{"bearer " + tok}, errdefs.Code{}},
		{"spaces around", []string{" \tBearer   " + tok + " \t"}, errdefs.Code{}},
		{"none", nil, errdefs.AuthRequired},
		{"empty", []string{""}, errdefs.AuthRequired},
		{"blank", []string{"  "}, errdefs.AuthRequired},
		{"two headers", []string{"Bearer " + tok, "Bearer " + tok}, errdefs.AuthInvalid},
		{"scheme only", []string{"Bearer"}, errdefs.AuthInvalid},
		{"scheme and space", []string{"Bearer "}, errdefs.AuthInvalid},
		{"basic", []string{"Basic " + tok}, errdefs.AuthInvalid},
		{"no scheme", []string{tok}, errdefs.AuthInvalid},
		{"tab separated", []string{"Bearer\t" + tok}, errdefs.AuthInvalid},
		{"short", []string{"Bearer " + tok[:48]}, errdefs.AuthInvalid},
		{"long", []string{"Bearer " + tok + "A"}, errdefs.AuthInvalid},
		{"other prefix", []string{"Bearer xxxxx_" + tok[6:]}, errdefs.AuthInvalid},
		{"bad alphabet", []string{"Bearer " + tok[:40] + "+/=" + tok[43:]}, errdefs.AuthInvalid},
		{"two tokens", []string{"Bearer " + tok + " " + tok}, errdefs.AuthInvalid},
		{"nul", []string{"Bearer " + tok[:48] + "\x00"}, errdefs.AuthInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAuthorization(tt.values)
			if tt.code == (errdefs.Code{}) {
				if err != nil || got != tok {
					t.Fatalf("got %q, %v; want the token", got, err)
				}
				return
			}
			if !tt.code.Is(err) {
				t.Fatalf("error %v, want %v", err, tt.code)
			}
			if strings.Contains(err.Error(), tok[6:20]) {
				t.Fatalf("error %q repeats the token", err)
			}
		})
	}
}

func TestCreateListRevoke(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	admin, err := Create(path, "ops", Admin, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	reader, err := Create(path, "dash", Read, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Create(path, "OPS", Invoke, 0, now); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("a second token named ops: %v", err)
	}
	for _, bad := range []string{"", "-x", "a b", strings.Repeat("a", 65)} {
		if _, err := Create(path, bad, Read, 0, now); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode: %v %v", fi.Mode(), err)
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), admin) || strings.Contains(string(raw), reader) {
		t.Fatal("the token file holds a token")
	}
	entries, err := ReadFile(path)
	if err != nil || len(entries) != 2 || entries[1].Name != "dash" || !entries[1].Expires.Equal(now.Add(time.Hour)) {
		t.Fatalf("entries %+v, %v", entries, err)
	}
	keys := NewKeys(entries, func() time.Time { return now })
	if id, err := keys.Authorize([]string{"Bearer " + admin}, Admin); err != nil || id.Name != "ops" {
		t.Fatalf("admin token: %v %v", id, err)
	}
	if found, err := Revoke(path, "ops"); err != nil || !found {
		t.Fatalf("revoke: %v %v", found, err)
	}
	if found, _ := Revoke(path, "ops"); found {
		t.Fatal("revoked twice")
	}
	if _, err := Revoke(filepath.Join(t.TempDir(), "none"), "ops"); err == nil {
		t.Fatal("revoke in a missing file")
	}
	entries, _ = ReadFile(path)
	keys.Set(entries)
	if _, err := keys.Authorize([]string{"Bearer " + admin}, Read); !errdefs.AuthInvalid.Is(err) {
		t.Fatalf("revoked token: %v", err)
	}
}

func TestAuthorize(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := now
	toks := map[string]string{}
	var entries []Entry
	for _, e := range []struct {
		name    string
		scope   Scope
		expires time.Time
	}{{"r", Read, time.Time{}}, {"i", Invoke, time.Time{}}, {"a", Admin, time.Time{}}, {"old", Admin, now.Add(time.Minute)}} {
		tok, _ := NewToken()
		toks[e.name] = tok
		entries = append(entries, Entry{Name: e.name, Scope: e.scope.String(), SHA256: Hash(tok), Created: now, Expires: e.expires})
	}
	keys := NewKeys(entries, func() time.Time { return clock })
	unknown, _ := NewToken()
	tests := []struct {
		token string
		need  Scope
		code  errdefs.Code
	}{
		{toks["r"], Read, errdefs.Code{}},
		{toks["r"], Invoke, errdefs.AuthScope},
		{toks["r"], Admin, errdefs.AuthScope},
		{toks["i"], Read, errdefs.Code{}},
		{toks["i"], Invoke, errdefs.Code{}},
		{toks["i"], Admin, errdefs.AuthScope},
		{toks["a"], Admin, errdefs.Code{}},
		{toks["old"], Admin, errdefs.Code{}},
		{unknown, Read, errdefs.AuthInvalid},
		{"", Read, errdefs.AuthRequired},
		{"", Public, errdefs.Code{}},
	}
	for _, tt := range tests {
		var values []string
		if tt.token != "" {
			values = []string{"Bearer " + tt.token}
		}
		_, err := keys.Authorize(values, tt.need)
		if tt.code == (errdefs.Code{}) && err != nil || tt.code != (errdefs.Code{}) && !tt.code.Is(err) {
			t.Errorf("token %q for %v: %v, want %v", tt.token[:min(8, len(tt.token))], tt.need, err, tt.code)
		}
	}
	clock = now.Add(time.Minute)
	if _, err := keys.Authorize([]string{"Bearer " + toks["old"]}, Read); !errdefs.AuthInvalid.Is(err) {
		t.Fatalf("expired token: %v", err)
	}
}

func TestParseFileBadLines(t *testing.T) {
	tok, _ := NewToken()
	good := `{"name":"a","scope":"read","sha256":"` + Hash(tok) + `","created":"2026-01-01T00:00:00Z"}`
	in := strings.Join([]string{"# comment", "", good, tok, `{"name":"b","scope":"root","sha256":"` + Hash(tok) + `"}`,
		`{"name":"c","scope":"read","sha256":"abc"}`, `{"name":"d","scope":"read","sha256":"` + Hash(tok) + `","x":1}`}, "\n")
	entries, err := ParseFile(strings.NewReader(in))
	if len(entries) != 1 || entries[0].Name != "a" {
		t.Fatalf("entries %+v", entries)
	}
	if err == nil || !strings.Contains(err.Error(), "line 4, 5, 6, 7") || strings.Contains(err.Error(), tok) {
		t.Fatalf("error %v", err)
	}
}

func TestContainsToken(t *testing.T) {
	tok, _ := NewToken()
	for s, want := range map[string]bool{tok: true, "x" + tok + "y": true, "spear_a.sh": false, "spear_" + tok[6:40]: false, "": false, "spear_spear_" + tok[6:]: true} {
		if got := ContainsToken(s); got != want {
			t.Errorf("ContainsToken(%q) = %v", s, got)
		}
	}
}

// BenchmarkAuthorize: the cost a call pays when auth is on, with 100
// tokens in the file.
func BenchmarkAuthorize(b *testing.B) {
	var entries []Entry
	var tok string
	for i := range 100 {
		tok, _ = NewToken()
		entries = append(entries, Entry{Name: fmt.Sprint("t", i), Scope: "invoke", SHA256: Hash(tok), Created: time.Now()})
	}
	keys := NewKeys(entries, nil)
	values := []string{"Bearer " + tok}
	for b.Loop() {
		if _, err := keys.Authorize(values, Invoke); err != nil {
			b.Fatal(err)
		}
	}
}
