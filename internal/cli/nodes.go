package cli

import (
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/spear-go/spear/api/spearlet"
)

// newNodeCmd is `spear node`: the nodes sharing the store.
func (a *nodeCommands) newNodeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "The nodes of the cluster",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the live nodes sharing the node's store",
		Long: `List the live nodes that share the store of the node at --addr, as its
node registry sees them (each node renews its entry every second; a node
that stops is gone within 3 s). The node that answered is marked with *.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), a.timeout, c.ListNodes, &spearlet.ListNodesRequest{})
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(resp)
			}
			a.printNodes(resp.GetNodes())
			return nil
		},
	})
	return cmd
}

// printNodes prints a node table.
func (a *nodeCommands) printNodes(nodes []*spearlet.NodeInfo) {
	tw := newTable(a.stdout)
	row(tw, "NODE", "ADDRESS", "RUNTIMES", "BUSY", "FREE", "WAITING", "VERSION", "UP", "SEEN")
	for _, n := range nodes {
		id := n.GetNodeId()
		if n.GetSelf() {
			id += " *"
		}
		up := time.Since(n.GetStartedAt().AsTime()).Truncate(time.Second)
		seen := time.Since(n.GetLastHeartbeat().AsTime()).Truncate(100 * time.Millisecond)
		row(tw, id, orDash(n.GetAddress()), orDash(strings.Join(n.GetRuntimes(), ",")),
			itoa(n.GetSlotsBusy()), itoa(n.GetSlotsFree()), itoa(n.GetWaiting()),
			orDash(n.GetVersion()), up.String(), seen.String()+" ago")
	}
	_ = tw.Flush()
}
