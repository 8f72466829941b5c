package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/errdefs"
)

// The cluster rows run `spear serve` nodes that share a 3-server
// JetStream cluster (nats-server processes on loopback, built from the
// nats-server module the repository depends on, so the version Spear
// embeds). See env.clusterRows.

// clusterWorkers is every cluster node's --workers.
const clusterWorkers = 4

// clusterAckWait is every cluster node's --ack-wait: the failover row's
// bound is this plus a second.
const clusterAckWait = 2 * time.Second

// The tasks the cluster rows run.
const (
	taskSleep200 = "bench-cluster-sleep200" // a shell script: sleep 0.2
	taskEcho     = "bench-process-echo"
	taskSleeper  = "bench-process-sleep" // blocks until killed
)

// natsServers is nats-server children routed into one JetStream cluster.
type natsServers struct {
	procs []*child
	urls  []string
}

// cluster is `spear serve` nodes sharing one natsServers; ids[i] is the
// --node-id of nodes[i]. The cluster rows are its methods.
type cluster struct {
	e     *env
	name  string
	nats  *natsServers
	nodes []*node
	ids   []string
}

var natsReadyRe = regexp.MustCompile(`(Server is ready)`)

// natsBin builds nats-server once per run and returns its path.
func natsBin(ctx context.Context, e *env) (string, error) {
	if b, ok := e.bins["nats-server"]; ok {
		return b, nil
	}
	out := filepath.Join(e.tmp, "nats-server")
	if err := e.run(ctx, e.opts.Root, "go", "build", "-o", out, "github.com/nats-io/nats-server/v2"); err != nil {
		return "", err
	}
	e.bins["nats-server"] = out
	return out, nil
}

// freeAddr returns a loopback address nothing listens on (yet).
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String(), nil
}

// startNATS starts n nats-server processes with JetStream, routed to each
// other as the cluster name, and waits until each is ready for clients.
// JetStream elects its leaders a moment later; the nodes wait for them.
func startNATS(ctx context.Context, e *env, name string, n int) (*natsServers, error) {
	bin, err := natsBin(ctx, e)
	if err != nil {
		return nil, err
	}
	clients, routes := make([]string, n), make([]string, n)
	for i := range n {
		if clients[i], err = freeAddr(); err == nil {
			routes[i], err = freeAddr()
		}
		if err != nil {
			return nil, err
		}
	}
	s := &natsServers{}
	for i := range n {
		dir, err := os.MkdirTemp(e.tmp, name+"-nats-")
		if err != nil {
			s.stop(&e.procs)
			return nil, err
		}
		host, port, _ := net.SplitHostPort(clients[i])
		c, _, err := e.procs.start(ctx, "nats-server", natsReadyRe, bin,
			"-js", "-n", fmt.Sprintf("%s-s%d", name, i+1), "-a", host, "-p", port, "-sd", dir,
			"--cluster_name", name, "--cluster", "nats://"+routes[i],
			"--routes", "nats://"+strings.Join(routes, ",nats://"))
		if err != nil {
			s.stop(&e.procs)
			return nil, err
		}
		s.procs = append(s.procs, c)
		s.urls = append(s.urls, "nats://"+clients[i])
	}
	return s, nil
}

func (s *natsServers) stop(p *procs) {
	for _, c := range s.procs {
		p.kill(c)
	}
}

// startCluster starts a 3-server NATS cluster and one node per id on it
// (at once: each waits for JetStream), and waits until every node lists
// all of them.
func startCluster(ctx context.Context, e *env, name string, ids ...string) (*cluster, error) {
	s, err := startNATS(ctx, e, name, 3)
	if err != nil {
		return nil, err
	}
	c := &cluster{e: e, name: name, nats: s, nodes: make([]*node, len(ids)), ids: ids}
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() { c.nodes[i], errs[i] = c.startNode(ctx, id) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.stop()
		return nil, err
	}
	if err := waitListed(ctx, c.nodes, ids); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// startNode starts node id on the cluster's NATS servers, on a fresh
// data dir.
func (c *cluster) startNode(ctx context.Context, id string) (*node, error) {
	return c.e.startNode(ctx, "", "--nats-url", strings.Join(c.nats.urls, ","), "--node-id", id,
		"--workers", fmt.Sprint(clusterWorkers), "--ack-wait", clusterAckWait.String(), "--shutdown-grace", "1s")
}

// stop kills the nodes (with their functions) and the NATS servers.
func (c *cluster) stop() {
	for _, n := range c.nodes {
		if n != nil {
			c.e.killNode(n)
		}
	}
	c.nats.stop(&c.e.procs)
}

// waitListed waits until the registry of each of nodes lists exactly ids
// (a node that stops leaves it at once, a dead one within seconds).
func waitListed(ctx context.Context, nodes []*node, ids []string) error {
	want := slices.Sorted(slices.Values(ids))
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range nodes {
		for {
			resp, err := n.api.ListNodes(ctx, &pb.ListNodesRequest{})
			var got []string
			for _, ni := range resp.GetNodes() {
				got = append(got, ni.GetNodeId())
			}
			slices.Sort(got)
			if err == nil && slices.Equal(got, want) {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("ListNodes at %s lists %v (%v), want %v: %w", n.addr, got, err, want, errdefs.ErrUnavailable)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// startAgain starts the cluster's nodes idx (stopped or killed) again on
// their data dirs, under their ids, at once, and waits until every node
// lists all.
func (c *cluster) startAgain(ctx context.Context, idx ...int) error {
	errs := make([]error, len(idx))
	var wg sync.WaitGroup
	for k, i := range idx {
		old := c.nodes[i]
		wg.Go(func() { c.nodes[i], errs[k] = c.e.startNode(ctx, old.dir, old.extra...) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return waitListed(ctx, c.nodes, c.ids)
}

// registerTasks registers the cluster rows' tasks through the first node
// and waits until every node knows them.
func (c *cluster) registerTasks(ctx context.Context) error {
	dir, err := os.MkdirTemp(c.e.tmp, "cluster-") // in an artifact root
	if err != nil {
		return err
	}
	script := filepath.Join(dir, "sleep200.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nsleep 0.2\n"), 0o755); err != nil {
		return err
	}
	tasks := [][2]string{{taskSleep200, script}, {taskEcho, c.e.bins["echo"]}, {taskSleeper, c.e.bins["sleep"]}}
	for _, t := range tasks {
		if err := c.nodes[0].register(ctx, t[0], "process", t[1]); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range c.nodes {
		for _, t := range tasks {
			for {
				_, err := n.api.GetTask(ctx, &pb.GetTaskRequest{TaskId: t[0]})
				if err == nil {
					break
				}
				if time.Now().After(deadline) || ctx.Err() != nil {
					return fmt.Errorf("%s: node %s does not know task %s: %w", c.name, n.addr, t[0], err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	return nil
}

// clusterRows runs the cluster rows on one 3-server NATS cluster (R3)
// with three nodes; the scale row stops and starts two of them, the
// failover row (last) kills one and starts it again.
func (e *env) clusterRows(ctx context.Context) ([]Row, error) {
	e.logf("  starting a 3-server NATS cluster and 3 nodes on it")
	c, err := startCluster(ctx, e, "trio", "n1", "n2", "n3")
	if err != nil {
		return nil, err
	}
	defer c.stop()
	if err := c.registerTasks(ctx); err != nil {
		return nil, err
	}
	var rows []Row
	for _, r := range []struct {
		id  string
		run func(context.Context) Row
	}{
		{"cluster-scale", c.scaleRow},
		{"cluster-forward", c.forwardRow},
		{"cluster-cancel", c.cancelRow},
		{"cluster-failover", c.failoverRow},
	} {
		if slices.Contains(c.nodes, nil) {
			rows = append(rows, Row{ID: r.id, Status: StatusError, Note: "not run: a node of the cluster did not start again"})
			continue
		}
		rows = append(rows, r.run(ctx))
	}
	return rows, nil
}
