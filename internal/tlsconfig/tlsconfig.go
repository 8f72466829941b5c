// Package tlsconfig builds the TLS configurations of Spear's node and
// clients from PEM files: the node's certificate and key (and a client CA
// for mutual TLS), a client's CA (and certificate and key for mutual TLS).
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"slices"

	"github.com/spear-go/spear/internal/errdefs"
)

// ALPN protocols the node offers on its one port.
const (
	ProtoH2    = "h2"
	ProtoHTTP1 = "http/1.1"
)

// Server is the node's TLS configuration: certFile and keyFile are its
// certificate (chain) and key; clientCAFile, when set, makes every client
// show a certificate signed by that CA (mutual TLS).
//
// ALPN: a client that offers http/1.1 gets it (curl, browsers, Connect and
// HTTP clients: the HTTP side of the port serves all of those); a client
// that offers only h2 gets h2 (gRPC clients, for grpc-go's native
// transport). The node tells the two apart after the handshake by the
// HTTP/2 preface, as on a plaintext port.
func Server(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, fmt.Errorf("TLS needs both --tls-cert and --tls-key: %w", errdefs.ErrInvalidArgument)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w: %w", errdefs.ErrInvalidArgument, err)
	}
	base := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{ProtoH2, ProtoHTTP1},
	}
	if clientCAFile != "" {
		pool, err := pool(clientCAFile, "--client-ca")
		if err != nil {
			return nil, err
		}
		base.ClientCAs = pool
		base.ClientAuth = tls.RequireAndVerifyClientCert
	}
	cfg := base.Clone()
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.NextProtos = []string{NegotiatedFor(hello.SupportedProtos)}
		return c, nil
	}
	return cfg, nil
}

// NegotiatedFor is the protocol the node picks among a client's ALPN
// offers: http/1.1 when offered (or nothing at all is), else h2.
func NegotiatedFor(offered []string) string {
	if len(offered) == 0 || slices.Contains(offered, ProtoHTTP1) || !slices.Contains(offered, ProtoH2) {
		return ProtoHTTP1
	}
	return ProtoH2
}

// Client is a client's TLS configuration: caFile, when set, is the CA that
// signed the node's certificate (else the system's roots); certFile and
// keyFile, when set, are the client's certificate for mutual TLS.
func Client(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		p, err := pool(caFile, "--tls-ca")
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = p
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("a client certificate needs both --tls-cert and --tls-key: %w", errdefs.ErrInvalidArgument)
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w: %w", errdefs.ErrInvalidArgument, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func pool(file, flag string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", flag, errdefs.ErrInvalidArgument, err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s %s: no PEM certificate in it: %w", flag, file, errdefs.ErrInvalidArgument)
	}
	return p, nil
}
