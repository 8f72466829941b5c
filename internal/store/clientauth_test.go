package store

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/spear-go/spear/internal/tlsconfig/tlstest"
)

// operator is a NATS operator with a system account and an account with
// JetStream, and a credentials file of a user of that account, as nsc
// makes them.
type operator struct {
	claims   *jwt.OperatorClaims
	sysPub   string
	accounts map[string]string // public key -> JWT
	creds    string            // the user's credentials file
}

func newOperator(t *testing.T, dir string) *operator {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	okp, err := nkeys.CreateOperator()
	must(err)
	opub, _ := okp.PublicKey()
	o := &operator{claims: jwt.NewOperatorClaims(opub), accounts: map[string]string{}}
	account := func(js bool) (nkeys.KeyPair, string) {
		kp, err := nkeys.CreateAccount()
		must(err)
		pub, _ := kp.PublicKey()
		ac := jwt.NewAccountClaims(pub)
		if js {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		tok, err := ac.Encode(okp)
		must(err)
		o.accounts[pub] = tok
		return kp, pub
	}
	_, o.sysPub = account(false)
	o.claims.SystemAccount = o.sysPub
	akp, _ := account(true)
	ukp, err := nkeys.CreateUser()
	must(err)
	upub, _ := ukp.PublicKey()
	ujwt, err := jwt.NewUserClaims(upub).Encode(akp)
	must(err)
	seed, _ := ukp.Seed()
	creds, err := jwt.FormatUserConfig(ujwt, seed)
	must(err)
	o.creds = filepath.Join(dir, "user.creds")
	must(os.WriteFile(o.creds, creds, 0o600))
	return o
}

// startSecureNATS runs a NATS server with JetStream that requires TLS
// with client certificates of ca and, when op is set, users of op.
func startSecureNATS(t *testing.T, dir string, ca *tlstest.CA, op *operator) string {
	t.Helper()
	srvCert := ca.Server("nats")
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: srvCert.CertFile, KeyFile: srvCert.KeyFile, CaFile: ca.CertFile, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	tc.MinVersion = tls.VersionTLS12
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: filepath.Join(dir, "js"), NoSigs: true, NoLog: true,
		TLS: true, TLSVerify: true, TLSConfig: tc, TLSTimeout: 10}
	if op != nil {
		res := &server.MemAccResolver{}
		for pub, tok := range op.accounts {
			if err := res.Store(pub, tok); err != nil {
				t.Fatal(err)
			}
		}
		opts.TrustedOperators = []*jwt.OperatorClaims{op.claims}
		opts.AccountResolver = res
		opts.SystemAccount = op.sysPub
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	return "tls://127.0.0.1:" + strconv.Itoa(srv.Addr().(*net.TCPAddr).Port)
}

func TestClientAuth(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "ca")
	client := ca.Client("node")
	op := newOperator(t, dir)
	url := startSecureNATS(t, dir, ca, op)
	full := ClientAuth{Creds: op.creds, TLSCA: ca.CertFile, TLSCert: client.CertFile, TLSKey: client.KeyFile}
	tests := []struct {
		name string
		auth ClientAuth
		url  string
		ok   bool
	}{
		{"creds and TLS", full, url, true},
		{"no creds", ClientAuth{TLSCA: ca.CertFile, TLSCert: client.CertFile, TLSKey: client.KeyFile}, url, false},
		{"no client certificate", ClientAuth{Creds: op.creds, TLSCA: ca.CertFile}, url, false},
		{"no CA", ClientAuth{Creds: op.creds, TLSCert: client.CertFile, TLSKey: client.KeyFile}, url, false},
		{"certificate without key", ClientAuth{Creds: op.creds, TLSCA: ca.CertFile, TLSCert: client.CertFile}, url, false},
		{"embedded server", full, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			s, err := Open(ctx, Options{DataDir: t.TempDir(), URL: tt.url, ClientAuth: tt.auth})
			if err == nil {
				s.Close()
			}
			if (err == nil) != tt.ok {
				t.Fatalf("Open: %v, want success %v", err, tt.ok)
			}
		})
	}
}
