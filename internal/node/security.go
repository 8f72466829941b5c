package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"syscall"

	"github.com/spear-go/spear/internal/auth"
	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/tlsconfig"
)

// Security is who may call a node and how: tokens, TLS, and the safe
// default (see docs/SECURITY.md).
type Security struct {
	// TokenFile turns bearer-token auth on (see package auth); the node
	// follows changes to it.
	TokenFile string
	// MetricsPublic serves /metrics without a token when auth is on.
	MetricsPublic bool
	// Insecure lets the node serve on a non-loopback address without any
	// authentication (and the embedded NATS server on one), with a
	// warning at every start.
	Insecure bool
	// TLSCert and TLSKey serve the one port over TLS; ClientCA requires
	// every client to show a certificate signed by it (mutual TLS).
	TLSCert, TLSKey, ClientCA string
}

// authConfigured says whether callers must prove who they are: with a
// token, or with a client certificate (mutual TLS, where every client
// with a valid certificate may do everything).
func (s Security) authConfigured() bool { return s.TokenFile != "" || s.ClientCA != "" }

// check applies the safe default before anything starts: on a loopback
// address a node may run without authentication; on any other address it
// needs a token file or mutual TLS, unless Insecure.
func (s Security) check(listen, natsListen, natsCluster string) error {
	if s.ClientCA != "" && s.TLSCert == "" {
		return fmt.Errorf("--client-ca needs --tls-cert and --tls-key: %w", errdefs.ErrInvalidArgument)
	}
	if (s.TLSCert == "") != (s.TLSKey == "") {
		return fmt.Errorf("TLS needs both --tls-cert and --tls-key: %w", errdefs.ErrInvalidArgument)
	}
	if !s.Insecure && !s.authConfigured() && !loopback(listen) {
		return fmt.Errorf("refusing to serve on %s without authentication: anyone who can reach it could run any program on this machine. "+
			"Create a token file (spear token create --file FILE --scope admin --name NAME) and give --token-file FILE, "+
			"or require client certificates with --tls-cert, --tls-key and --client-ca; "+
			"or listen on 127.0.0.1; or give --insecure to serve without authentication anyway: %w", listen, errdefs.ErrFailedPrecondition)
	}
	if !s.Insecure && natsListen != "" && !loopback(natsListen) {
		return fmt.Errorf("refusing to expose the embedded NATS server on %s: it has no authentication, and it holds every task and execution. "+
			"Keep --nats-listen on 127.0.0.1, or run an external NATS server with authentication (--nats-url, --nats-creds, --nats-tls-ca); "+
			"or give --insecure: %w", natsListen, errdefs.ErrFailedPrecondition)
	}
	if !s.Insecure && natsCluster != "" && !loopback(natsCluster) {
		return fmt.Errorf("refusing to accept NATS cluster routes on %s: routes have no authentication, and any server that connects joins the cluster "+
			"and gets every task and execution. Keep --nats-cluster on 127.0.0.1 (nodes on one machine), or run an external NATS cluster with "+
			"authentication (--nats-url, --nats-creds, --nats-tls-ca); or, on a private network you trust, give --insecure: %w", natsCluster, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// warn logs, at every start, what the configuration leaves open.
func (s Security) warn(log *slog.Logger, listen, natsListen, natsCluster string) {
	exposed := !loopback(listen)
	switch {
	case s.Insecure && exposed && !s.authConfigured():
		log.Warn("INSECURE: serving on a non-loopback address without authentication (--insecure): anyone who can reach it can run any program as this node's user", "addr", listen)
	case s.Insecure:
		log.Warn("--insecure is set: this node would serve without authentication on any address", "addr", listen)
	}
	if s.Insecure && natsListen != "" && !loopback(natsListen) {
		log.Warn("INSECURE: the embedded NATS server, without authentication, accepts clients on a non-loopback address", "nats_listen", natsListen)
	}
	if s.Insecure && natsCluster != "" && !loopback(natsCluster) {
		log.Warn("INSECURE: the embedded NATS server, without authentication, accepts cluster routes on a non-loopback address", "nats_cluster", natsCluster)
	}
	if exposed && s.TokenFile != "" && s.TLSCert == "" {
		log.Warn("tokens travel in clear text on a non-loopback address: add --tls-cert and --tls-key", "addr", listen)
	}
}

// loopback says whether a listen address is on the loopback interface
// only: localhost or a loopback IP. Other host names count as exposed.
func loopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// openAuth reads the token file and follows it until ctx ends; nil keys
// without a token file.
func (s Security) openAuth(ctx context.Context, log *slog.Logger) (*auth.Keys, error) {
	if s.TokenFile == "" {
		return nil, nil
	}
	keys, err := auth.Watch(ctx, s.TokenFile, auth.WatchOptions{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("--token-file: %w", err)
	}
	return keys, nil
}

// listen opens the node's one port, over TLS when configured.
func (s Security) listen(addr string) (net.Listener, error) {
	var cfg *tls.Config
	if s.TLSCert != "" {
		var err error
		if cfg, err = tlsconfig.Server(s.TLSCert, s.TLSKey, s.ClientCA); err != nil {
			return nil, err
		}
	}
	l, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("listen on %s: the address is in use (another spear serve?): stop what listens there or choose another --listen", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	if cfg != nil {
		l = tls.NewListener(l, cfg)
	}
	return l, nil
}
