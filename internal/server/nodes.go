package server

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/store"
)

// ClusterView is the node registry as this node last saw it (package
// membership).
type ClusterView interface {
	// Nodes are the live nodes, this one included, by id.
	Nodes() []store.NodeEntry
	// Self is this node's id.
	Self() string
}

// ListNodes lists the live nodes sharing this node's store.
func (s *nodeAPI) ListNodes(context.Context, *pb.ListNodesRequest) (*pb.ListNodesResponse, error) {
	return &pb.ListNodesResponse{Nodes: s.clusterInfo().GetNodes()}, nil
}

// clusterInfo is the registry's view; this node alone without one.
func (s *serviceCore) clusterInfo() *pb.ClusterInfo {
	if s.cluster == nil {
		running, waiting := s.mgr.Counts()
		workers := s.mgr.Workers()
		self := &pb.NodeInfo{NodeId: s.nodeID, SlotsTotal: int32(workers), SlotsBusy: int32(running),
			SlotsFree: int32(max(workers-running, 0)), Waiting: int32(waiting), Self: true}
		return &pb.ClusterInfo{NodeCount: 1, Nodes: []*pb.NodeInfo{self}}
	}
	nodes := s.cluster.Nodes()
	info := &pb.ClusterInfo{NodeCount: int32(len(nodes))}
	for _, n := range nodes {
		info.Nodes = append(info.Nodes, nodeInfo(n, n.ID == s.cluster.Self()))
	}
	return info
}

func nodeInfo(n store.NodeEntry, self bool) *pb.NodeInfo {
	return &pb.NodeInfo{
		NodeId: n.ID, Address: n.Address, Runtimes: n.Runtimes,
		SlotsTotal: int32(n.SlotsTotal), SlotsBusy: int32(n.SlotsBusy),
		SlotsFree: int32(max(n.SlotsTotal-n.SlotsBusy, 0)), Waiting: int32(n.Waiting),
		Version: n.Version, StartedAt: timestamppb.New(n.StartedAt), LastHeartbeat: timestamppb.New(n.Heartbeat),
		Self: self,
	}
}
