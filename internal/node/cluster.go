package node

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spear-go/spear/internal/membership"
	"github.com/spear-go/spear/internal/store"
)

// join puts the node in the node registry, once it listens (its entry
// carries the address).
func (n *Node) join(ctx context.Context) error {
	home, err := filepath.Abs(n.cfg.DataDir)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	m, err := membership.Join(ctx, n.store.Nodes, membership.Options{
		Self: store.NodeEntry{
			ID: n.cfg.NodeID, Address: advertised(n.listener.Addr(), host),
			Runtimes: strings.Split(runtimeNames(n.runtimes), ","), Home: host + ":" + home,
		},
		Figures: func() (total, busy, waiting int) {
			busy, waiting = n.mgr.Counts()
			return n.mgr.Workers(), busy, waiting
		},
		Logger: n.log,
	})
	if err != nil {
		return fmt.Errorf("node registry: %w", err)
	}
	n.member = m
	return nil
}

// leave takes the node out of the registry at once.
func (n *Node) leave() {
	if n.member == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n.member.Leave(ctx)
}

// advertised is the address other nodes and tools can reach the node at:
// the listener's, with the host name for an unspecified IP.
func advertised(addr net.Addr, host string) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok || !tcp.IP.IsUnspecified() || host == "" {
		return addr.String()
	}
	return net.JoinHostPort(host, fmt.Sprint(tcp.Port))
}

// clusterNodes are the live nodes as the registry last saw them; none
// before the node joined.
func (n *Node) clusterNodes() []store.NodeEntry {
	if n.member == nil {
		return nil
	}
	return n.member.Nodes()
}

// nodeSlots are the live nodes' run slots, total and busy, by node id.
func (n *Node) nodeSlots() (total, busy map[string]float64) {
	total, busy = map[string]float64{}, map[string]float64{}
	for _, e := range n.clusterNodes() {
		total[e.ID], busy[e.ID] = float64(e.SlotsTotal), float64(e.SlotsBusy)
	}
	return total, busy
}
