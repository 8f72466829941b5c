package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/retry"
)

// ClusterName is the name of the NATS cluster the embedded servers of
// spearlet nodes form (see Cluster).
const ClusterName = "spear"

// Cluster makes the embedded NATS server one of a cluster of spearlet
// nodes' embedded servers, so that they form a JetStream cluster with
// nothing else installed. The server is named after the node.
type Cluster struct {
	// Listen is the HOST:PORT on which the embedded server accepts routes
	// from its peers; empty: no cluster.
	Listen string
	// Routes are the peers' route URLs (nats://host:port). They may
	// include this node's own, so every node can be given the same list.
	Routes []string
}

func (c Cluster) enabled() bool { return c.Listen != "" }

// validate refuses settings that cannot form a cluster, naming the flag.
func (c Cluster) validate(external bool) error {
	switch {
	case len(c.Routes) > 0 && c.Listen == "":
		return fmt.Errorf("--nats-routes needs --nats-cluster HOST:PORT (where this node's embedded NATS server accepts routes): %w", errdefs.ErrInvalidArgument)
	case c.enabled() && external:
		return fmt.Errorf("--nats-cluster forms a cluster of embedded NATS servers; with --nats-url the node uses an external one: give one or the other: %w", errdefs.ErrInvalidArgument)
	}
	_, err := c.routeURLs()
	return err
}

// routeURLs parses Routes.
func (c Cluster) routeURLs() ([]*url.URL, error) {
	var out []*url.URL
	for _, r := range c.Routes {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		u, err := url.Parse(r)
		if err != nil || u.Host == "" || u.Port() == "" || (u.Scheme != "nats" && u.Scheme != "nats-route") {
			return nil, fmt.Errorf("--nats-routes %q: want nats://HOST:PORT of a peer's --nats-cluster: %w", r, errdefs.ErrInvalidArgument)
		}
		out = append(out, u)
	}
	return out, nil
}

// configure makes so a member of the cluster, named name.
func (c Cluster) configure(so *server.Options, name string) error {
	if !c.enabled() {
		return nil
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("--nats-cluster %q: want HOST:PORT: %w", c.Listen, errdefs.ErrInvalidArgument)
	}
	so.Cluster.Host = host
	if _, err := fmt.Sscanf(port, "%d", &so.Cluster.Port); err != nil {
		return fmt.Errorf("--nats-cluster port %q: %w", port, errdefs.ErrInvalidArgument)
	}
	if name == "" {
		return fmt.Errorf("--nats-cluster: the embedded server needs a name in the cluster (the node id): %w", errdefs.ErrInvalidArgument)
	}
	so.Cluster.Name = ClusterName
	so.ServerName = name
	if so.DontListen {
		// The server starts routing only once it accepts clients: on a
		// loopback port of its choosing, not announced to other servers'
		// clients.
		so.DontListen, so.Host, so.Port = false, "127.0.0.1", server.RANDOM_PORT
		so.Cluster.NoAdvertise = true
	}
	so.Routes, err = c.routeURLs()
	return err
}

// requestTimeout bounds a JetStream request or an acknowledgement that a
// cluster may never answer (see Outputs.Delete, connect): jetstream's own
// default for requests made without a deadline.
const requestTimeout = 5 * time.Second

// Replicas is how many copies JetStream keeps of every stream and bucket
// (decided at Open), for streams and buckets created later.
func (s *Store) Replicas() int { return s.opts.Replicas }

// readyTimeout bounds the wait for JetStream at start-up. An embedded
// cluster waits longer: its first start needs every peer up, and nodes
// on other machines may be started by hand.
func (s *setup) readyTimeout() time.Duration {
	switch {
	case s.opts.ReadyTimeout > 0:
		return s.opts.ReadyTimeout
	case s.opts.Cluster.enabled():
		return 2 * time.Minute
	}
	return 30 * time.Second
}

// where names the NATS server(s) the node uses, for messages: the URL
// without credentials, or the embedded server.
func (s *setup) where() string {
	if s.opts.URL != "" {
		return redactURLs(s.opts.URL)
	}
	if s.opts.Cluster.enabled() {
		return fmt.Sprintf("the embedded NATS server (cluster %s, routes %s)", s.opts.Cluster.Listen, strings.Join(s.opts.Cluster.Routes, ","))
	}
	return "the embedded NATS server"
}

// redactURLs hides the passwords of a comma-separated list of URLs.
func redactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}

// clustered says whether the server is part of a JetStream cluster, which
// can keep more than one copy of each stream.
func (s *setup) clustered() bool {
	if s.srv != nil {
		return s.srv.JetStreamIsClustered()
	}
	return s.nc.ConnectedClusterName() != ""
}

// clusterSize is the number of servers of the cluster: the JetStream meta
// group's size for the embedded server; for an external one, the servers
// the connection knows of (those given and those the cluster announced).
func (s *setup) clusterSize() int {
	if s.srv != nil {
		if jsz, err := s.srv.Jsz(nil); err == nil && jsz.Meta != nil && jsz.Meta.Size > 0 {
			return jsz.Meta.Size
		}
		return s.srv.NumRemotes() + 1
	}
	seen := map[string]bool{}
	for _, srv := range s.nc.Servers() {
		if u, err := url.Parse(srv); err == nil {
			seen[u.Host] = true
		}
	}
	return len(seen)
}

// startUp waits for JetStream, decides the replicas and provisions the
// streams and buckets, retrying what a cluster that is still forming (or
// other nodes provisioning at the same time) makes fail, for at most the
// ready timeout.
func (s *setup) startUp(ctx context.Context) error {
	bound := s.readyTimeout()
	deadline := time.Now().Add(bound)
	if err := s.waitJetStream(ctx, deadline, bound); err != nil {
		return err
	}
	var err error
	for attempt := 1; ; attempt++ {
		if err = s.provisionOnce(ctx); err == nil {
			return nil
		}
		if !transient(err) || !time.Now().Before(deadline) {
			break
		}
		if attempt == 1 {
			s.log.Info("provisioning JetStream: retrying", "nats", s.where(), "err", err)
		} else {
			s.log.Debug("provisioning JetStream: retrying", "attempt", attempt, "err", err)
		}
		if !retry.Sleep(ctx, provisionBackoff.Delay(attempt)) {
			return ctx.Err()
		}
	}
	if transient(err) {
		return fmt.Errorf("provisioning JetStream at %s: still failing after %v: %w: %w", s.where(), bound, errdefs.ErrUnavailable, err)
	}
	return err
}

// provisionBackoff spaces the retries of provisioning.
var provisionBackoff = retry.Backoff{Base: 100 * time.Millisecond, Max: 2 * time.Second}

// provisionOnce decides the replicas and provisions, within a bounded
// time (each request is bounded too: see ensure); what an attempt created
// stays, so the next gets further.
func (s *setup) provisionOnce(ctx context.Context) error {
	actx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := s.resolveReplicas(actx); err != nil {
		return err
	}
	return (&provisioner{s.core}).provision(actx)
}

// waitJetStream waits until JetStream answers: a new cluster answers once
// it has elected its meta leader, seconds after its servers start.
func (s *setup) waitJetStream(ctx context.Context, deadline time.Time, bound time.Duration) error {
	start, logged := time.Now(), time.Now()
	var err error
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		_, err = s.js.AccountInfo(actx)
		cancel()
		switch {
		case err == nil:
			if waited := time.Since(start); waited > time.Second {
				s.log.Info("JetStream is ready", "nats", s.where(), "waited", waited.Round(time.Millisecond))
			}
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case s.noJetStream(err):
			return fmt.Errorf("the NATS server at %s has no JetStream: start it with JetStream enabled (nats-server -js, or jetstream {} in its config): %w",
				s.where(), errdefs.ErrFailedPrecondition)
		case !time.Now().Before(deadline):
			return fmt.Errorf("JetStream at %s is not ready after %v (%v): a JetStream cluster answers once it has elected a leader, "+
				"which needs a majority of its servers up (on its first start, all of them): %w", s.where(), bound, err, errdefs.ErrUnavailable)
		}
		if time.Since(logged) >= 5*time.Second {
			logged = time.Now()
			s.log.Info("waiting for JetStream to be ready", s.waitingFor(err)...)
		}
		if !retry.Sleep(ctx, 200*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// noJetStream says whether err is the answer of a server without
// JetStream (one of a cluster may lack it while others have it: then it
// is worth waiting).
func (s *setup) noJetStream(err error) bool {
	if !errors.Is(err, jetstream.ErrJetStreamNotEnabled) && !errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
		return false
	}
	on, _ := s.nc.ConnectedServerJetStream()
	return !on
}

// waitingFor says, for the log, what JetStream's readiness waits for.
func (s *setup) waitingFor(err error) []any {
	args := []any{"nats", s.where(), "err", err}
	if s.srv != nil && s.opts.Cluster.enabled() {
		args = append(args, "peers_connected", s.srv.NumRemotes(),
			"waiting_for", "the peers in --nats-routes: the cluster elects its leader once a majority (on its first start, all) of them are up")
	}
	return args
}

// resolveReplicas decides how many copies of every stream and bucket
// JetStream keeps (s.opts.Replicas): --replicas when given; else those of
// the existing queue stream, so nodes agree with the one that created it;
// else 3 on a cluster of at least 3 servers, 1 otherwise.
func (s *setup) resolveReplicas(ctx context.Context) error {
	want, clustered := s.wantReplicas, s.clustered()
	if want > 1 && !clustered {
		return s.notClustered(want)
	}
	var existing int
	if st, err := s.js.Stream(ctx, StreamQueue); err == nil {
		existing = st.CachedInfo().Config.Replicas
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("queue stream: %w", err)
	}
	size := s.clusterSize()
	replicas, why := want, "--replicas"
	switch {
	case want > 0:
	case existing > 0:
		replicas, why = existing, "auto: as the existing streams"
	case clustered && size >= 3:
		replicas, why = 3, fmt.Sprintf("auto: the cluster has %d servers", size)
	default:
		replicas, why = 1, fmt.Sprintf("auto: the cluster has %d server(s); 3 needs at least 3", size)
		if !clustered {
			why = "auto: a single server"
		}
	}
	if why != s.resolved { // said once, not at every retry
		level := slog.LevelInfo
		if s.opts.URL == "" && !s.opts.Cluster.enabled() {
			level = slog.LevelDebug // a lone node: nothing to say
		}
		s.log.Log(ctx, level, "JetStream replicas", "replicas", replicas, "why", why, "nats", s.where())
		if existing > 0 && existing != replicas {
			s.log.Warn("the existing streams and buckets keep a different number of copies: updating them", "from", existing, "to", replicas)
		}
	}
	s.opts.Replicas, s.resolved = replicas, why
	return nil
}

// notClustered refuses replicas on a server that is not part of a
// JetStream cluster, saying what to do instead.
func (s *setup) notClustered(want int) error {
	if s.opts.URL == "" {
		return fmt.Errorf("--replicas %d: the embedded NATS server is a single server, which keeps one copy of each stream; "+
			"form a cluster of nodes (--nats-cluster, --nats-routes) or use a JetStream cluster (--nats-url), or give --replicas 1 (0: auto): %w",
			want, errdefs.ErrFailedPrecondition)
	}
	return fmt.Errorf("--replicas %d: the NATS server at %s is not part of a JetStream cluster, so it keeps one copy of each stream; "+
		"point --nats-url at a JetStream cluster of at least %d servers, or give --replicas 1 (0: auto): %w",
		want, s.where(), want, errdefs.ErrFailedPrecondition)
}

// transient says whether a start-up error may go away by itself: a
// cluster still forming or electing leaders, or another node creating the
// same stream at the same moment.
func transient(err error) bool {
	if err == nil || errors.Is(err, errdefs.ErrInvalidArgument) || errors.Is(err, errdefs.ErrFailedPrecondition) {
		return false
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case 10008, // JetStream system temporarily unavailable
			10005, 10023, // no suitable peers, insufficient resources: peers still joining
			10058, 10059, 10013, 10014, 10105, 10148, // created, updated or deleted by another node meanwhile
			10202, 10226: // a membership change or reconfiguration in progress
			return true
		}
		return false
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrConnectionReconnecting)
}
