package store

import (
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/spear-go/spear/internal/errdefs"
)

// ClientAuth is how the node proves itself to an external NATS server and
// checks the server: a credentials file (a user JWT and nkey seed, as nsc
// writes it), the CA that signed the server's certificate, and a client
// certificate for servers that require one. Empty fields are not used.
type ClientAuth struct {
	Creds   string
	TLSCA   string
	TLSCert string
	TLSKey  string
}

func (a ClientAuth) empty() bool { return a == ClientAuth{} }

// options are the connection options for a; an error for settings that
// cannot be used (a certificate without its key, any of them without an
// external server).
func (a ClientAuth) options(url string) ([]nats.Option, error) {
	if a.empty() {
		return nil, nil
	}
	if url == "" {
		return nil, fmt.Errorf("--nats-creds and --nats-tls-* apply to an external NATS server: give --nats-url: %w", errdefs.ErrInvalidArgument)
	}
	if (a.TLSCert == "") != (a.TLSKey == "") {
		return nil, fmt.Errorf("a NATS client certificate needs both --nats-tls-cert and --nats-tls-key: %w", errdefs.ErrInvalidArgument)
	}
	var opts []nats.Option
	if a.Creds != "" {
		opts = append(opts, nats.UserCredentials(a.Creds))
	}
	if a.TLSCA != "" {
		opts = append(opts, nats.RootCAs(a.TLSCA))
	}
	if a.TLSCert != "" {
		opts = append(opts, nats.ClientCert(a.TLSCert, a.TLSKey))
	}
	return opts, nil
}
