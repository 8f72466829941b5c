package harness

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/errdefs"
)

// sandboxRows measures what the process sandbox costs: sync invocations of
// the process echo at concurrency 1 on a fresh node (--sandbox auto, the
// default) against the same on a node started with --sandbox off, in
// interleaved rounds of the same run.
func (e *env) sandboxRows(ctx context.Context) ([]Row, error) {
	info, err := e.main.api.GetHealth(ctx, &pb.GetHealthRequest{IncludeDetails: true})
	if err != nil {
		return nil, err
	}
	level := info.GetDetails().GetSystemInfo()["sandbox"]
	if level == "" || level == "off" {
		return nil, fmt.Errorf("the main node reports sandbox %q: %w", level, errdefs.ErrFailedPrecondition)
	}
	rows, err := e.againstNode(ctx, "sandbox-process", []string{"--sandbox", "off"}, map[int]target{1: {maxLat: 1.10}})
	if err != nil {
		return nil, err
	}
	rows[0].Note = joinNote(rows[0].Note, "sandbox "+level)
	return rows, nil
}

// againstNode compares sync invocations of the process echo on a node
// with the defaults with the same on a node started with flags, both
// started for this (the main node has stored every earlier row's
// executions), in interleaved rounds of the same run, at each concurrency
// targets names (rows id-c<conc>).
func (e *env) againstNode(ctx context.Context, id string, flags []string, targets map[int]target) ([]Row, error) {
	nodes := make([]*node, 2)
	for i, extra := range [][]string{nil, flags} {
		n, err := e.startNode(ctx, "", extra...)
		if err != nil {
			return nil, err
		}
		defer e.stopNode(n)
		if err := n.register(ctx, taskEcho, "process", e.bins["echo"]); err != nil {
			return nil, err
		}
		nodes[i] = n
	}
	in := e.p.payload
	defaults := func(ctx context.Context, _ int) error { return nodes[0].invokeSync(ctx, taskEcho, in) }
	other := func(ctx context.Context, _ int) error { return nodes[1].invokeSync(ctx, taskEcho, in) }
	var rows []Row
	for _, conc := range slices.Sorted(maps.Keys(targets)) {
		rows = append(rows, e.compare(ctx, fmt.Sprintf("%s-c%d", id, conc), conc, defaults, "node with "+strings.Join(flags, " "), other, targets[conc]))
	}
	return rows, nil
}
