package harness

import "context"

// sparesRows measures whether process spares pay (processes started ahead
// of their invocations, see internal/runtime/process/spares.go): sync
// invocations of the process echo on a fresh node (spares on, the
// default) against the same on a node started with --process-spares 0, in
// interleaved rounds of the same run; at concurrency 1, where a spare is
// ready for each call, and 32, where the node's CPUs are busy and spares
// should cost nothing.
func (e *env) sparesRows(ctx context.Context) ([]Row, error) {
	return e.againstNode(ctx, "process-spares", []string{"--process-spares", "0"}, map[int]target{1: {maxLat: 0.9}, 32: {minThr: 0.95}})
}
