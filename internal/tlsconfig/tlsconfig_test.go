package tlsconfig

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"

	"github.com/spear-go/spear/internal/tlsconfig/tlstest"
)

func TestNegotiatedFor(t *testing.T) {
	tests := []struct {
		offered []string
		want    string
	}{
		{nil, ProtoHTTP1},
		{[]string{"h2"}, ProtoH2},                      // gRPC clients
		{[]string{"h2", "http/1.1"}, ProtoHTTP1},       // curl, browsers, Go's HTTP client
		{[]string{"http/1.1"}, ProtoHTTP1},             // HTTP/1.1 only
		{[]string{"acme-tls/1"}, ProtoHTTP1},           // nothing we serve
		{[]string{"spdy/3", "h2"}, ProtoH2},            // h2 among others
		{[]string{"http/1.1", "h2", "h3"}, ProtoHTTP1}, // order does not matter
	}
	for _, tt := range tests {
		if got := NegotiatedFor(tt.offered); got != tt.want {
			t.Errorf("NegotiatedFor(%v) = %q, want %q", tt.offered, got, tt.want)
		}
	}
}

// TestServerALPN handshakes with the node's configuration as a gRPC
// client and as curl would.
func TestServerALPN(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "ca")
	srv := ca.Server("node")
	cfg, err := Server(srv.CertFile, srv.KeyFile, "")
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	client, err := Client(ca.CertFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, offer := range [][]string{{"h2"}, {"h2", "http/1.1"}} {
		c := client.Clone()
		c.NextProtos = offer
		conn, err := tls.Dial("tcp", l.Addr().String(), c)
		if err != nil {
			t.Fatalf("offering %v: %v", offer, err)
		}
		if got := conn.ConnectionState().NegotiatedProtocol; got != NegotiatedFor(offer) {
			t.Errorf("offering %v: negotiated %q", offer, got)
		}
		conn.Close()
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "ca")
	srv := ca.Server("node")
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]func() error{
		"server without key":  func() error { _, err := Server(srv.CertFile, "", ""); return err },
		"server key mismatch": func() error { _, err := Server(srv.CertFile, ca.CertFile, ""); return err },
		"client CA junk":      func() error { _, err := Server(srv.CertFile, srv.KeyFile, junk); return err },
		"client CA missing":   func() error { _, err := Server(srv.CertFile, srv.KeyFile, filepath.Join(dir, "none")); return err },
		"CA junk":             func() error { _, err := Client(junk, "", ""); return err },
		"cert without key":    func() error { _, err := Client("", srv.CertFile, ""); return err },
	} {
		if f() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
