package harness

import (
	"context"
	"fmt"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/errdefs"
)

// sandboxRows measures what the process sandbox costs: sync invocations of
// the process echo at concurrency 1 on the main node (--sandbox auto, the
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
	off, err := e.startNode(ctx, "", "--sandbox", "off")
	if err != nil {
		return nil, err
	}
	defer e.stopNode(off)
	const task = "bench-process-echo"
	if err := off.register(ctx, task, "process", e.bins["echo"]); err != nil {
		return nil, err
	}
	in := e.p.payload
	on := func(ctx context.Context, _ int) error { return e.main.invokeSync(ctx, task, in) }
	bare := func(ctx context.Context, _ int) error { return off.invokeSync(ctx, task, in) }
	r := e.compare(ctx, "sandbox-process-c1", 1, on, "node with --sandbox off", bare, target{maxLat: 1.10})
	r.Note = joinNote(r.Note, "sandbox "+level)
	return []Row{r}, nil
}
