package docker

// One Run, phase by phase: create the container, attach to its streams,
// watch for its exit, start it, stream its input and output, wait for its
// exit (or stop it when the run's context ends) and collect the result.
// finish releases what the phases took, in reverse order.

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/runtime"
)

// containerRun is one invocation of the docker runtime, from the creation
// of its container to its result.
type containerRun struct {
	r     *Runtime
	ctx   context.Context
	inv   *runtime.Invocation
	begin time.Time

	// Set by create; id is "" until the container exists.
	id          string
	memoryLimit int64 // the container's memory limit in bytes; 0: none
	// Set by attach.
	att *client.ContainerAttachResult
	// Set by watchExit. The wait outlives ctx (a graceful stop waits for
	// the exit after ctx has ended); waitCancel ends it. waitC is nil once
	// the exit has been received.
	waitCtx    context.Context
	waitCancel context.CancelFunc
	waitC      <-chan container.WaitResponse
	waitErrC   <-chan error
	// Set by start and stream. outDone is nil once the output copy has
	// ended and been waited for.
	startup  time.Duration
	memPeak  func() int64
	outDone  chan error
	stopping bool // a graceful stop is under way
}

// create creates the container. Creation is not cancelled by the run's
// context: if the caller gave up mid-request the engine could still create
// the container and we would not know its ID.
func (c *containerRun) create() error {
	if err := c.ctx.Err(); err != nil {
		return fmt.Errorf("docker: run %s: %w", c.inv.ExecutionID, err)
	}
	cfg, hc, err := c.r.containerConfig(c.inv)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), createTimeout)
	created, err := c.r.cli.ContainerCreate(cctx, client.ContainerCreateOptions{Config: cfg, HostConfig: hc})
	cancel()
	if err != nil {
		return c.r.engineError(c.ctx, "create container", cfg.Image, err)
	}
	c.id, c.memoryLimit = created.ID, hc.Memory
	if err := c.ctx.Err(); err != nil {
		return fmt.Errorf("docker: run %s: %w", c.inv.ExecutionID, err)
	}
	return nil
}

// attach attaches to the container's streams, before it starts so that no
// output is lost.
func (c *containerRun) attach() error {
	att, err := c.r.cli.ContainerAttach(c.ctx, c.id, client.ContainerAttachOptions{
		Stream: true, Stdin: true, Stdout: true, Stderr: true,
	})
	if err != nil {
		return c.r.engineError(c.ctx, "attach container", "", err)
	}
	c.att = &att
	return nil
}

// watchExit registers the wait for the container's exit, before it starts
// so that the exit cannot be missed.
func (c *containerRun) watchExit() {
	c.waitCtx, c.waitCancel = context.WithCancel(context.WithoutCancel(c.ctx))
	wait := c.r.cli.ContainerWait(c.waitCtx, c.id, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})
	c.waitC, c.waitErrC = wait.Result, wait.Error
}

// start starts the container, and the sampling of its memory.
func (c *containerRun) start() error {
	if _, err := c.r.cli.ContainerStart(c.ctx, c.id, client.ContainerStartOptions{}); err != nil {
		return c.r.engineError(c.ctx, "start container", "", err)
	}
	c.startup = time.Since(c.begin)
	c.memPeak = c.r.sampleMemory(c.waitCtx, c.id)
	return nil
}

// stream copies inv.Input to the container's standard input, then closes
// it, and its output, demultiplexed, to inv.Stdout and inv.Stderr.
func (c *containerRun) stream() {
	att, in := c.att, c.inv.Input
	go func() {
		if in != nil {
			_, _ = io.Copy(att.Conn, in)
		}
		_ = att.CloseWrite()
	}()
	outDone := make(chan error, 1)
	c.outDone = outDone
	stdout, stderr := c.inv.Stdout, c.inv.Stderr
	go func() {
		_, err := stdcopy.StdCopy(stdout, stderr, att.Reader)
		outDone <- err
	}()
}

// waitExit streams until the container has exited and its output has
// ended. When the run's context ends first, it stops the container: at
// once, or for a graceful stop with SIGTERM, streaming on until it exits
// or the grace is over.
func (c *containerRun) waitExit() (container.WaitResponse, error) {
	var (
		exit    container.WaitResponse
		exited  bool
		outOpen = true
		// While a graceful stop is under way, ctxDone is nil and graceC
		// fires when the grace is over.
		ctxDone = c.ctx.Done()
		graceC  <-chan time.Time
	)
	for !exited || outOpen {
		select {
		case <-ctxDone:
			if grace := runtime.StopGrace(c.ctx); grace > 0 && !exited {
				c.r.signal(c.ctx, c.id, c.inv.ExecutionID, "SIGTERM")
				t := time.NewTimer(grace)
				defer t.Stop()
				ctxDone, graceC, c.stopping = nil, t.C, true
				continue
			}
			return exit, c.kill()
		case <-graceC:
			return exit, c.kill()
		case exit = <-c.waitC:
			exited, c.waitC = true, nil
		case err := <-c.waitErrC:
			c.waitC = nil
			switch {
			case c.ctx.Err() == nil:
				return exit, c.r.engineError(c.ctx, "wait container", "", err)
			case !c.stopping:
				continue // reported by the ctxDone case
			}
			// Stopping, but the exit cannot be waited for: kill now.
			return exit, c.kill()
		case err := <-c.outDone:
			outOpen, c.outDone = false, nil
			if err != nil {
				return exit, fmt.Errorf("docker: run %s: streaming output: %w: %w",
					c.inv.ExecutionID, errdefs.ErrUnavailable, err)
			}
		}
	}
	if c.stopping {
		// It exited within the grace, having been asked to stop.
		return exit, c.stopped()
	}
	return exit, nil
}

// kill kills the container, whose run's context has ended, and ends the
// output copy. It returns the run's error.
func (c *containerRun) kill() error {
	c.r.kill(c.ctx, c.id, c.inv.ExecutionID)
	c.stopOutput()
	return c.stopped()
}

// stopped is the error of a run whose context ended: it wraps ctx.Err()
// and, when it says more, the context's cause.
func (c *containerRun) stopped() error {
	err, cause := c.ctx.Err(), context.Cause(c.ctx)
	if cause != nil && cause != err {
		return fmt.Errorf("docker: run %s: %w (cause: %w)", c.inv.ExecutionID, err, cause)
	}
	return fmt.Errorf("docker: run %s: %w", c.inv.ExecutionID, err)
}

// collect turns the container's exit into Run's result.
func (c *containerRun) collect(exit container.WaitResponse) (runtime.Result, error) {
	if exit.Error != nil && exit.Error.Message != "" {
		return runtime.Result{}, fmt.Errorf("docker: run %s: wait: %w: %s",
			c.inv.ExecutionID, errdefs.ErrInternal, exit.Error.Message)
	}
	c.waitCancel() // ends the memory sampling
	res := runtime.Result{ExitCode: int(exit.StatusCode), MemoryUsedBytes: c.memPeak(), Startup: c.startup}
	if res.ExitCode != 0 && c.memoryLimit > 0 {
		res.MemoryLimitHit = c.oomKilled(res.ExitCode)
	}
	return res, nil
}

// oomKilled says whether a container that failed under a memory limit was
// killed by the kernel for it (one more round trip, for such runs only).
// The engine may report the exit before it has taken the OOM event in
// (OOMKilled still false): a SIGKILL exit (137) is asked about again a few
// times, and taken as the limit if the flag never comes: nothing else
// here kills a container's process that way (Spear's own stops end the
// run before this point).
func (c *containerRun) oomKilled(exitCode int) bool {
	for try := range 5 {
		in, err := c.r.cli.ContainerInspect(c.ctx, c.id, client.ContainerInspectOptions{})
		if err == nil && in.Container.State != nil && in.Container.State.OOMKilled {
			return true
		}
		if exitCode != 137 {
			return false
		}
		if try < 4 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	return true
}

// stopOutput ends the output copy and waits for it, so that nothing writes
// to inv.Stdout or inv.Stderr after Run returns.
func (c *containerRun) stopOutput() {
	if c.outDone != nil {
		c.att.Close()
		<-c.outDone
		c.outDone = nil
	}
}

// finish releases what the phases took, in reverse order: the output copy,
// the exit wait, the attachment and, in the background, the container.
func (c *containerRun) finish() {
	if c.id == "" {
		return
	}
	c.stopOutput()
	if waitC, waitErrC := c.waitC, c.waitErrC; waitC != nil {
		// ContainerWait's goroutine sends on an unbuffered channel: drain
		// it (its context is cancelled next, so it ends promptly).
		go func() {
			select {
			case <-waitC:
			case <-waitErrC:
			}
		}()
	}
	if c.waitCancel != nil {
		c.waitCancel()
	}
	if c.att != nil {
		c.att.Close()
	}
	c.r.removeSoon(c.ctx, c.id, c.inv.ExecutionID)
}
