package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/auth"
	"github.com/spear-go/spear/internal/tlsconfig"
	"github.com/spear-go/spear/internal/tlsconfig/tlstest"
)

func runApp(t *testing.T, env map[string]string, args ...string) runResult {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := newApp(strings.NewReader(""), &stdout, &stderr, func(k string) string { return env[k] }).run(t.Context(), args)
	return runResult{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func TestTokenCommands(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	r := runApp(t, nil, "token", "create", "--file", file, "--scope", "invoke", "--name", "ci", "--expires", "24h")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	token := lines[len(lines)-1]
	if r.code != 0 || !auth.WellFormed(token) {
		t.Fatalf("create: %+v", r)
	}
	raw, _ := os.ReadFile(file)
	if strings.Contains(string(raw), token) {
		t.Fatal("the file holds the token")
	}
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"--scope", "root", "--name", "x"}, ExitUsage, "error: --scope \"root\": want read, invoke or admin\n"},
		{[]string{"--scope", "read", "--name", "a b"}, ExitUsage, "error: token name \"a b\": want 1-64 of A-Z a-z 0-9 . _ @ -, starting with a letter or digit\n"},
		{[]string{"--scope", "read", "--name", "ci"}, ExitFailed, "error: a token named \"ci\" exists: revoke it first, or pick another name\n"},
		{[]string{"--scope", "read"}, ExitUsage, "error: required flag(s) \"name\" not set\n"},
		{[]string{"--scope", "read", "--name", "x", "--expires", "-1h"}, ExitUsage, "error: --expires -1h0m0s: want a positive duration\n"},
	} {
		r := runApp(t, nil, append([]string{"token", "create", "--file", file}, tc.args...)...)
		if r.code != tc.code || !strings.HasPrefix(r.stderr, tc.stderr) {
			t.Errorf("create %v: exit %d, stderr %q; want %d, %q", tc.args, r.code, r.stderr, tc.code, tc.stderr)
		}
	}
	r = runApp(t, nil, "token", "list", "--file", file)
	if r.code != 0 || !strings.Contains(r.stdout, "ci") || !strings.Contains(r.stdout, "invoke") || strings.Contains(r.stdout, auth.Hash(token)) {
		t.Fatalf("list: %+v", r)
	}
	if r := runApp(t, nil, "token", "revoke", "--file", file, "nope"); r.code != ExitNotFound {
		t.Fatalf("revoke of an unknown name: %+v", r)
	}
	if r := runApp(t, nil, "token", "revoke", "--file", file, "ci"); r.code != 0 {
		t.Fatalf("revoke: %+v", r)
	}
	if entries, err := auth.ReadFile(file); err != nil || len(entries) != 0 {
		t.Fatalf("after revoke: %v %v", entries, err)
	}
}

// healthServer answers GetHealth and records each call's authorization.
type healthServer struct {
	spearlet.UnimplementedFunctionServiceServer
	mu   sync.Mutex
	auth []string
}

func (h *healthServer) GetHealth(ctx context.Context, _ *spearlet.GetHealthRequest) (*spearlet.GetHealthResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	h.mu.Lock()
	h.auth = append(h.auth, strings.Join(md.Get("authorization"), ","))
	h.mu.Unlock()
	return &spearlet.GetHealthResponse{Status: "healthy"}, nil
}

func (h *healthServer) last() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.auth) == 0 {
		return "<no call>"
	}
	return h.auth[len(h.auth)-1]
}

func startHealth(t *testing.T, cfg *tls.Config) (string, *healthServer) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg != nil {
		l = tls.NewListener(l, cfg)
	}
	h := &healthServer{}
	s := grpc.NewServer()
	spearlet.RegisterFunctionServiceServer(s, h)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return l.Addr().String(), h
}

func TestClientCredentials(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "ca")
	srv, cli := ca.Server("node"), ca.Client("client")
	mtls, err := tlsconfig.Server(srv.CertFile, srv.KeyFile, ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	plainAddr, plain := startHealth(t, nil)
	tlsAddr, secure := startHealth(t, mtls)
	tok1, _ := auth.NewToken()
	tok2, _ := auth.NewToken()
	tests := []struct {
		name string
		env  map[string]string
		args []string
		h    *healthServer
		code int
		auth string
	}{
		{"no token", map[string]string{"SPEAR_ADDR": plainAddr}, nil, plain, 0, ""},
		{"env token", map[string]string{"SPEAR_ADDR": plainAddr, "SPEAR_TOKEN": tok1}, nil, plain, 0, "Bearer " + tok1},
		{"flag wins", map[string]string{"SPEAR_ADDR": plainAddr, "SPEAR_TOKEN": tok1}, []string{"--token", tok2}, plain, 0, "Bearer " + tok2},
		{"mtls from env", map[string]string{"SPEAR_ADDR": tlsAddr, "SPEAR_TOKEN": tok1, "SPEAR_TLS_CA": ca.CertFile,
			"SPEAR_TLS_CERT": cli.CertFile, "SPEAR_TLS_KEY": cli.KeyFile}, nil, secure, 0, "Bearer " + tok1},
		{"mtls flags", nil, []string{"--addr", "https://" + tlsAddr, "--tls-ca", ca.CertFile, "--tls-cert", cli.CertFile, "--tls-key", cli.KeyFile}, secure, 0, ""},
		{"no client cert", nil, []string{"--addr", tlsAddr, "--tls-ca", ca.CertFile}, secure, ExitUnavailable, ""},
		{"no CA", nil, []string{"--addr", "https://" + tlsAddr, "--tls-cert", cli.CertFile, "--tls-key", cli.KeyFile}, secure, ExitUnavailable, ""},
		{"cert without key", nil, []string{"--addr", tlsAddr, "--tls-ca", ca.CertFile, "--tls-cert", cli.CertFile}, secure, ExitUsage, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runApp(t, tt.env, append(tt.args, "health", "--timeout", "20s")...)
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d: %+v", r.code, tt.code, r)
			}
			if tt.code == 0 && tt.h.last() != tt.auth {
				t.Fatalf("authorization %q, want %q", tt.h.last(), tt.auth)
			}
			if strings.Contains(r.stdout+r.stderr, tok1) || strings.Contains(r.stdout+r.stderr, tok2) {
				t.Fatal("the CLI printed a token")
			}
		})
	}
}
