package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/spear-go/spear/internal/config"
	"github.com/spear-go/spear/internal/node"
	"github.com/spear-go/spear/internal/store"
)

// newServeCmd returns `spear serve`, which runs a spearlet node until
// SIGINT or SIGTERM.
func (a *nodeCommands) newServeCmd() *cobra.Command {
	var (
		cfg                     node.Config
		configFile, sync, level string
		format                  string
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a spearlet node",
		Long: `Run a spearlet node: gRPC (h2c), Connect/JSON and HTTP on one address, state in
NATS JetStream (embedded under --data-dir unless --nats-url is given).

On a loopback address (127.0.0.1, the default) a node may run without
authentication. On any other address it needs --token-file (bearer tokens:
see spear token) or mutual TLS (--client-ca), or it refuses to start unless
--insecure is given. --tls-cert and --tls-key serve the same port over TLS.

Every flag can also be set with an environment variable SPEAR_<FLAG> (for
example SPEAR_DATA_DIR) or a key in the YAML --config file; flags win over the
environment, which wins over the file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configFile == "" {
				configFile = a.getenv(config.EnvName("config"))
			}
			if err := config.Resolve(cmd.Flags(), a.getenv, configFile); err != nil {
				return usageErrorf("%v", err)
			}
			policy, err := store.ParseSyncPolicy(sync)
			if err != nil {
				return usageErrorf("--sync: %v", err)
			}
			cfg.Sync = policy
			logger, err := newLogger(a.app, level, format)
			if err != nil {
				return usageErrorf("%v", err)
			}
			cfg.Logger = logger
			a.started = true
			return serve(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "YAML config file (keys are flag names)")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:50052", "address serving gRPC, Connect/JSON and HTTP")
	f.StringVar(&cfg.DataDir, "data-dir", "spear-data", "directory holding all the node's state")
	f.StringVar(&cfg.NodeID, "node-id", "", "node id (default: generated once and kept in the data dir)")
	f.StringVar(&cfg.NATSURL, "nats-url", "", "external NATS server URL, or a comma-separated list of a cluster's servers (default: embedded server; see docs/CLUSTER.md)")
	f.StringVar(&cfg.NATSListen, "nats-listen", "", "let the embedded NATS server accept clients on HOST:PORT (other nodes, tools); it has no authentication, so a non-loopback address needs --insecure")
	f.StringVar(&cfg.NATSCluster.Listen, "nats-cluster", "", "make the embedded NATS server join other nodes' in a JetStream cluster, accepting their routes on HOST:PORT (with --nats-routes; routes have no authentication, so a non-loopback address needs --insecure)")
	f.StringSliceVar(&cfg.NATSCluster.Routes, "nats-routes", nil, "the cluster's route URLs, nats://HOST:PORT of every node's --nats-cluster (repeatable, or comma-separated; may include this node's own)")
	f.IntVar(&cfg.Replicas, "replicas", 0, "copies JetStream keeps of every stream and bucket; 0: auto (as the existing streams, else 3 on a cluster of at least 3 servers, else 1); more than 1 needs a cluster")
	f.StringVar(&sync, "sync", "interval", "embedded JetStream disk sync: interval (survives a process crash) or always (fsync every write; survives power loss, ~15x slower acceptance)")
	f.StringVar(&cfg.Docker, "docker", "auto", "docker runtime: auto (if an engine answers), on, off")
	f.StringVar(&cfg.DockerHost, "docker-host", "", "Docker Engine API address (default: DOCKER_HOST or the local socket)")
	f.StringVar(&cfg.Sandbox, "sandbox", "auto", "process sandbox: auto (every level the host allows: slot uid, no_new_privs, Landlock, seccomp, cgroups, loopback-only network; see docs/SECURITY.md) or off (benchmarks, debugging)")
	f.IntVar(&cfg.SandboxUIDBase, "sandbox-uid-base", 0, "first uid of the sandbox's run slots (1024 uids; 0: derived from the node id; set distinct bases for nodes sharing a host)")
	f.IntVar(&cfg.ProcessSpares, "process-spares", node.DefaultProcessSpares, "process functions started ahead of their invocations, for tasks called often, at most this many on the node (0: none; see docs/RATIONALE.md)")
	f.IntVar(&cfg.Workers, "workers", 0, "executions that run at once (default: max(4, 2 x CPUs))")
	f.DurationVar(&cfg.DefaultTimeout, "default-timeout", 5*time.Minute, "execution timeout when the invocation names none")
	f.DurationVar(&cfg.MaxTimeout, "max-timeout", time.Hour, "cap on any execution timeout")
	f.DurationVar(&cfg.QueueTTL, "queue-ttl", time.Hour, "longest an execution may wait to start (then TIMEOUT with QUEUE_TIMEOUT)")
	f.DurationVar(&cfg.StopGrace, "stop-grace", 5*time.Second, "a cancel without force signals the function and gives it this long to exit")
	f.Int64Var(&cfg.MaxQueued, "max-queued", 0, "async executions the queue may hold for all tasks (0: no bound); beyond it QUEUE_FULL")
	f.DurationVar(&cfg.Retention, "retention", 24*time.Hour, "how long execution records are kept")
	f.DurationVar(&cfg.AckWait, "ack-wait", 30*time.Second, "a queued execution whose node stops signalling progress for this long is run again elsewhere")
	f.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", 30*time.Second, "on SIGTERM or Ctrl-C, how long running executions may finish (a second signal stops them at once)")
	f.IntVar(&cfg.MaxMessageBytes, "max-message-bytes", 64<<20, "largest request or response message")
	f.IntVar(&cfg.MaxInputBytes, "max-input-bytes", 32<<20, "largest function input")
	f.Int64Var(&cfg.MaxStoreBytes, "max-store-bytes", 0, "bytes the store may hold; 0: 90% of the data dir's filesystem (embedded), the account limit (external), else learned when the server first refuses a write")
	f.Int64Var(&cfg.MaxOutputBytes, "max-output-bytes", 256<<20, "largest function output (stored in JetStream, not memory); beyond it the execution fails with OUTPUT_TOO_LARGE")
	f.StringVar(&cfg.Samples, "samples", "", "directory of sample functions to register at start-up")
	f.StringSliceVar(&cfg.ArtifactRoots, "artifact-root", nil, "directory a task's process or wasm artifact may be named in by path (repeatable, or comma-separated); the data dir's artifacts and --samples always are; uploads are always allowed")
	f.StringSliceVar(&cfg.CallbackAllow, "callback-allow", nil, "host patterns a callback_url may name (repeatable, or comma-separated): host, *.domain, IP, CIDR, each with an optional :port, or * for any; default: loopback only (localhost, 127.0.0.0/8, ::1)")
	f.BoolVar(&cfg.Pprof, "pprof", false, "serve Go's profiler under /debug/pprof/ (HTTP/1.1 side of --listen)")
	securityFlags(f, &cfg)
	f.StringVar(&level, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&format, "log-format", "text", "text or json")
	return cmd
}

// securityFlags are serve's flags of package node's Security and the NATS
// connection's credentials and TLS.
func securityFlags(f *pflag.FlagSet, cfg *node.Config) {
	s, n := &cfg.Security, &cfg.NATSAuth
	f.StringVar(&s.TokenFile, "token-file", "", "turn bearer-token auth on with this token file (spear token create); changes apply without a restart")
	f.BoolVar(&s.MetricsPublic, "metrics-public", false, "serve /metrics without a token when auth is on")
	f.BoolVar(&s.Insecure, "insecure", false, "allow serving on a non-loopback address without authentication (logs a warning at every start)")
	f.StringVar(&s.TLSCert, "tls-cert", "", "serve over TLS with this certificate (PEM; with --tls-key)")
	f.StringVar(&s.TLSKey, "tls-key", "", "the key of --tls-cert (PEM)")
	f.StringVar(&s.ClientCA, "client-ca", "", "mutual TLS: require client certificates signed by this CA (PEM)")
	f.StringVar(&n.Creds, "nats-creds", "", "credentials file (JWT and nkey seed) for the --nats-url server")
	f.StringVar(&n.TLSCA, "nats-tls-ca", "", "CA (PEM) that signed the --nats-url server's certificate")
	f.StringVar(&n.TLSCert, "nats-tls-cert", "", "client certificate (PEM) for the --nats-url server, with --nats-tls-key")
	f.StringVar(&n.TLSKey, "nats-tls-key", "", "the key of --nats-tls-cert (PEM)")
}

func newLogger(a *app, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(a.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(a.stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// serve runs a node until ctx ends or a first SIGINT/SIGTERM, then shuts
// it down gracefully; a second signal stops it at once.
func serve(ctx context.Context, cfg node.Config) error {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	n, err := node.Start(ctx, cfg)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-sigs:
	}
	now, stopNow := context.WithCancel(context.Background())
	defer stopNow()
	go func() {
		select {
		case <-sigs:
			n.StopNow()
			stopNow()
		case <-now.Done():
		}
	}()
	n.Shutdown(now)
	return nil
}
