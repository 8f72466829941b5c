package callback

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
)

func TestAllowlistCheck(t *testing.T) {
	tests := []struct {
		name     string
		patterns []string
		url      string
		code     string // "" allowed
	}{
		{"default: 127.0.0.1", nil, "http://127.0.0.1:9000/cb", ""},
		{"default: 127.1.2.3", nil, "http://127.1.2.3/cb", ""},
		{"default: localhost", nil, "https://LOCALHOST:8443/cb", ""},
		{"default: localhost.", nil, "http://localhost./cb", ""},
		{"default: ::1", nil, "http://[::1]:9000/cb", ""},
		{"default: mapped v4 loopback", nil, "http://[::ffff:127.0.0.1]/cb", ""},
		{"default: another host", nil, "http://example.com/cb", "CALLBACK_NOT_ALLOWED"},
		{"default: private address", nil, "http://10.0.0.5/cb", "CALLBACK_NOT_ALLOWED"},
		{"default: metadata address", nil, "http://169.254.169.254/latest", "CALLBACK_NOT_ALLOWED"},
		{"default: name of loopback lookalike", nil, "http://localhost.evil.com/cb", "CALLBACK_NOT_ALLOWED"},
		{"default: 0.0.0.0", nil, "http://0.0.0.0/cb", "CALLBACK_NOT_ALLOWED"},
		{"default: userinfo trick", nil, "http://127.0.0.1@example.com/cb", "CALLBACK_NOT_ALLOWED"},
		{"default: not a URL", nil, "ftp://127.0.0.1/x", "INVALID_CALLBACK_URL"},

		{"wildcard: subdomain", []string{"*.example.com"}, "https://hooks.example.com/cb", ""},
		{"wildcard: deeper", []string{"*.example.com"}, "https://a.b.example.com/cb", ""},
		{"wildcard: not the apex", []string{"*.example.com"}, "https://example.com/cb", "CALLBACK_NOT_ALLOWED"},
		{"wildcard: suffix lookalike", []string{"*.example.com"}, "https://badexample.com/cb", "CALLBACK_NOT_ALLOWED"},
		{"wildcard replaces the default", []string{"*.example.com"}, "http://127.0.0.1/cb", "CALLBACK_NOT_ALLOWED"},
		{"ip and port", []string{"10.0.0.5:8080"}, "http://10.0.0.5:8080/cb", ""},
		{"ip, other port", []string{"10.0.0.5:8080"}, "http://10.0.0.5:8081/cb", "CALLBACK_NOT_ALLOWED"},
		{"ip, default port", []string{"10.0.0.5:80"}, "http://10.0.0.5/cb", ""},
		{"cidr", []string{"10.0.0.0/8"}, "http://10.200.1.1/cb", ""},
		{"cidr outside", []string{"10.0.0.0/8"}, "http://11.0.0.1/cb", "CALLBACK_NOT_ALLOWED"},
		{"ipv6 with port", []string{"[::1]:9000"}, "http://[::1]:9000/cb", ""},
		{"ipv6 in brackets", []string{"[fd00::1]"}, "http://[fd00::1]/cb", ""},
		{"name with port", []string{"hooks.example.com:443"}, "https://hooks.example.com/cb", ""},
		{"name rule, IP URL", []string{"hooks.example.com"}, "http://10.0.0.5/cb", "CALLBACK_NOT_ALLOWED"},
		{"any", []string{"*"}, "http://anything.example/cb", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := ParseAllowlist(tc.patterns)
			if err != nil {
				t.Fatal(err)
			}
			err = a.Check(tc.url)
			if got := errdefs.CodeOf(err); (tc.code == "" && err != nil) || (tc.code != "" && got != tc.code) {
				t.Fatalf("Check(%q) under %q = %v (%s), want %q", tc.url, tc.patterns, err, got, tc.code)
			}
			if tc.code == "CALLBACK_NOT_ALLOWED" && !errors.Is(err, errdefs.ErrPermissionDenied) {
				t.Errorf("%v is not permission denied", err)
			}
		})
	}
	var zero Allowlist
	if zero.Check("http://127.0.0.1/") != nil || zero.Check("http://example.com/") == nil {
		t.Error("the zero Allowlist does not allow loopback only")
	}
}

func TestParseAllowlist(t *testing.T) {
	for _, p := range []string{"*.", "*.*.example.com", "a b", "host:0", "host:99999", "host:x", "[::1", "exa$mple.com", "..", "10.0.0.0/40"} {
		if _, err := ParseAllowlist([]string{p}); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("ParseAllowlist(%q) = %v, want invalid argument", p, err)
		}
	}
}

// TestDialRecheck: a name allowed as loopback (localhost) may only reach a
// loopback address; an IP rule only its block; other names as resolved.
func TestDialRecheck(t *testing.T) {
	a, err := ParseAllowlist([]string{"localhost", "10.0.0.0/8", "hooks.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host, addr string
		ok         bool
	}{
		{"localhost", "127.0.0.1", true},
		{"localhost", "::1", true},
		{"localhost", "192.0.2.7", false},
		{"10.1.2.3", "10.1.2.3", true},
		{"hooks.example.com", "192.0.2.7", true},
	}
	for _, tc := range tests {
		r, ok := a.match(tc.host, "80")
		if !ok {
			t.Fatalf("%s not matched", tc.host)
		}
		if got := r.allowsDial(netip.MustParseAddr(tc.addr)); got != tc.ok {
			t.Errorf("%s dialled at %s: allowed %v, want %v", tc.host, tc.addr, got, tc.ok)
		}
	}
	// Through the client: a dial to a host outside the list never starts.
	_, err = a.dial(context.Background(), "tcp", "example.com:80")
	if !errors.Is(err, errNotAllowed) {
		t.Fatalf("dial example.com = %v, want not allowed", err)
	}
}

// TestDeliverRefusals: a target not allowed is never contacted; a redirect
// to another host is not followed (and the delivery fails for good); one
// on the same host is.
func TestDeliverRefusals(t *testing.T) {
	var hits atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer other.Close()
	otherAsLocalhost := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/away":
			http.Redirect(w, r, otherAsLocalhost+"/stolen", http.StatusTemporaryRedirect)
		case "/here":
			http.Redirect(w, r, "/final", http.StatusTemporaryRedirect)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	defer srv.Close()
	d := New(Options{MaxAttempts: 3, BaseDelay: time.Millisecond})

	out := d.Deliver(t.Context(), "http://example.com/cb", "ex", nil)
	if out.State != StateFailed || out.Attempts != 0 || !strings.Contains(out.LastError, "not allowed") {
		t.Errorf("not allowed target: %+v", out)
	}
	out = d.Deliver(t.Context(), srv.URL+"/away", "ex", nil)
	if out.State != StateFailed || out.Attempts != 1 || out.LastStatusCode != http.StatusTemporaryRedirect || hits.Load() != 0 {
		t.Errorf("redirect to another host: %+v, other host hit %d times", out, hits.Load())
	}
	out = d.Deliver(t.Context(), srv.URL+"/here", "ex", nil)
	if out.State != StateDelivered || out.LastStatusCode != http.StatusNoContent {
		t.Errorf("redirect on the same host: %+v", out)
	}
}
