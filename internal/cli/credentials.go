package cli

import (
	"context"
	"strings"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/spear-go/spear/internal/config"
	"github.com/spear-go/spear/internal/tlsconfig"
)

// clientAuth is how a client command proves itself to a node and checks
// it: a bearer token, and TLS.
type clientAuth struct {
	token                  string
	tlsCA, tlsCert, tlsKey string
}

// flags registers the client's flags on the root command; each also comes
// from its environment variable (SPEAR_TOKEN, SPEAR_TLS_CA, ...).
func (c *clientAuth) flags(pf *pflag.FlagSet) {
	pf.StringVar(&c.token, "token", "", "bearer token sent as 'authorization: Bearer ...' (env SPEAR_TOKEN)")
	pf.StringVar(&c.tlsCA, "tls-ca", "", "connect over TLS, checking the node's certificate against this CA (PEM; env SPEAR_TLS_CA)")
	pf.StringVar(&c.tlsCert, "tls-cert", "", "client certificate for mutual TLS (PEM; env SPEAR_TLS_CERT)")
	pf.StringVar(&c.tlsKey, "tls-key", "", "the key of --tls-cert (PEM; env SPEAR_TLS_KEY)")
}

// resolve fills the client's flags not given on the command line from the
// environment. Only these: `spear serve` resolves its own flags (where
// --tls-cert and --tls-key are the node's).
func (c *clientAuth) resolve(root *pflag.FlagSet, getenv func(string) string) error {
	fs := pflag.NewFlagSet("client", pflag.ContinueOnError)
	for _, name := range []string{"token", "tls-ca", "tls-cert", "tls-key"} {
		if f := root.Lookup(name); f != nil {
			fs.AddFlag(f)
		}
	}
	return config.Resolve(fs, getenv, "")
}

// useTLS says whether to connect over TLS: with a CA or a client
// certificate given, or an https:// or grpcs:// address (system roots).
func (c *clientAuth) useTLS(addr string) bool {
	return c.tlsCA != "" || c.tlsCert != "" || strings.HasPrefix(addr, "https://") || strings.HasPrefix(addr, "grpcs://")
}

// dialOptions are the gRPC options for a node at addr.
func (c *clientAuth) dialOptions(addr string) ([]grpc.DialOption, error) {
	creds := insecure.NewCredentials()
	tls := c.useTLS(addr)
	if tls {
		cfg, err := tlsconfig.Client(c.tlsCA, c.tlsCert, c.tlsKey)
		if err != nil {
			return nil, usageErrorf("%v", err)
		}
		creds = credentials.NewTLS(cfg)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if c.token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token: c.token, tls: tls}))
	}
	return opts, nil
}

// bearer sends a token with every call. It does not require TLS: a node
// on loopback may be plaintext (docs/SECURITY.md says why TLS matters
// elsewhere).
type bearer struct {
	token string
	tls   bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.tls }
