// Package docker is the Spear runtime that runs functions as containers on a
// local Docker engine.
//
// Each Run creates one container from inv.Artifact.Location (an image that
// must already be present on the engine: there is no registry), attaches to
// its standard streams, starts it, feeds inv.Input to its standard input,
// streams standard output and error frame by frame and waits for it to exit;
// the container is then removed in the background. When the run's context
// ends the container is killed (SIGKILL) at once, or, when the cause is a
// runtime.GracefulStop, sent SIGTERM and killed only if it has not exited
// within the grace. Every container carries the labels
// io.spear.managed=true, io.spear.execution=<execution id> and
// io.spear.node=<node id>, so that Reconcile can remove what a crashed node
// left behind.
//
// Containers are locked down by default: no network (network mode none), a
// read-only root file system with a small tmpfs on /tmp, every capability
// dropped, no privileges, no new privileges, the engine's default seccomp
// profile (never unconfined), a PID limit, no swap beyond the memory limit
// (memory-swap = memory), a non-root user (65534:65534, nobody), no bind
// mounts or volumes, and no log driver (output only travels over the
// attach stream). Artifact metadata relaxes or tunes this:
//
//	network          "true" keeps the engine's default network
//	writable_rootfs  "true" makes the root file system writable
//	user             the user[:group] to run as (default 65534:65534)
//	memory_bytes     memory limit in bytes when inv.MemoryLimitBytes is 0
//	cpu_shares       relative CPU weight (cgroup cpu.shares)
//	pids_limit       maximum number of processes (default 256; 0 is the default)
package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/runtime"
)

// Labels set on every container this runtime creates.
const (
	LabelManaged   = "io.spear.managed"
	LabelExecution = "io.spear.execution"
	LabelNode      = "io.spear.node"
)

// Artifact metadata keys understood by this runtime.
const (
	MetaNetwork        = "network"
	MetaWritableRootfs = "writable_rootfs"
	MetaMemoryBytes    = "memory_bytes"
	MetaCPUShares      = "cpu_shares"
	MetaPidsLimit      = "pids_limit"
	MetaUser           = "user"
)

// DefaultUser is the user:group a container runs as when the artifact
// metadata does not set user: nobody, never root.
const DefaultUser = "65534:65534"

// tmpfsOptions are the options of the tmpfs on /tmp, the one writable place
// of a read-only root file system.
const tmpfsOptions = "rw,noexec,nosuid,nodev,size=64m"

// DefaultPidsLimit is the PID limit of a container when the artifact
// metadata does not set pids_limit.
const DefaultPidsLimit = 256

// cleanupTimeout bounds the kill and remove calls made after a run, which
// use a context detached from the run's (it may be over already).
const cleanupTimeout = 10 * time.Second

// createTimeout bounds container creation. Creation is not cancelled by the
// run's context, so that a container the engine creates is never unknown to
// us (and so never left behind).
const createTimeout = 30 * time.Second

// Options configures a Runtime.
type Options struct {
	// Host is the engine address (unix:///var/run/docker.sock,
	// tcp://host:2375, ...). "" takes it from the environment (DOCKER_HOST,
	// DOCKER_TLS_VERIFY, DOCKER_CERT_PATH, DOCKER_API_VERSION), defaulting
	// to the local socket.
	Host string
	// NodeID labels the containers of this node (io.spear.node); Reconcile
	// only touches containers with this label value.
	NodeID string
	// Logger receives cleanup failures. nil discards them.
	Logger *slog.Logger
	// MemorySampleInterval, when > 0, makes Run sample the container's
	// memory with one-shot stats requests every interval while it runs,
	// and report the largest sample (the cgroup's peak, max_usage, where
	// the engine reports it, as on cgroup v1; else the current usage) as
	// Result.MemoryUsedBytes. The engine has no peak once the container has
	// exited, so a function that ends before the first sample reports 0,
	// as does every function when this is 0 (the default: no extra
	// requests).
	MemorySampleInterval time.Duration
}

// Runtime runs functions in Docker containers. It is safe for concurrent
// use.
type Runtime struct {
	cli         *client.Client
	nodeID      string
	log         *slog.Logger
	memInterval time.Duration

	// Containers whose run has its result are removed in the background:
	// removal takes the engine longer than the run itself often does
	// (~150 ms on a fuse-overlayfs engine), and neither a caller nor a
	// cancel should wait for it. removals bounds how many are pending
	// (past it, Run removes before returning); Close waits for them.
	removals chan struct{}
	removing sync.WaitGroup
}

// maxPendingRemovals bounds the containers being removed in the background.
const maxPendingRemovals = 64

var (
	_ runtime.Runtime            = (*Runtime)(nil)
	_ runtime.CapabilityReporter = (*Runtime)(nil)
	_ runtime.Validator          = (*Runtime)(nil)
	_ runtime.Reconciler         = (*Runtime)(nil)
	_ runtime.Closer             = (*Runtime)(nil)
)

// New returns a Runtime talking to the engine at opts.Host. It does not
// contact the engine (so a node can start while the engine is down); use
// Ping to check that it answers. The API version is negotiated on the first
// request.
func New(_ context.Context, opts Options) (*Runtime, error) {
	clientOpts := []client.Opt{client.FromEnv}
	if opts.Host != "" {
		clientOpts = append(clientOpts, client.WithHost(opts.Host))
	}
	cli, err := client.New(clientOpts...)
	if err != nil {
		return nil, fmt.Errorf("docker: new client: %w: %w", errdefs.ErrInvalidArgument, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runtime{
		cli:         cli,
		nodeID:      opts.NodeID,
		log:         log.With("runtime", string(runtime.TypeDocker)),
		memInterval: opts.MemorySampleInterval,
		removals:    make(chan struct{}, maxPendingRemovals),
	}, nil
}

// Type returns runtime.TypeDocker.
func (r *Runtime) Type() runtime.Type { return runtime.TypeDocker }

// Capabilities implements runtime.CapabilityReporter: the memory peak is
// measured only with Options.MemorySampleInterval.
func (r *Runtime) Capabilities() runtime.Capabilities {
	return runtime.Capabilities{GracefulStop: true, MemoryLimit: true, MemoryPeak: r.memInterval > 0}
}

// Close waits for the containers being removed in the background, then
// releases the engine client's idle connections.
func (r *Runtime) Close(context.Context) error {
	r.removing.Wait()
	return r.cli.Close()
}

// Ping checks that the engine answers (and negotiates the API version). The
// error wraps errdefs.ErrUnavailable.
func (r *Runtime) Ping(ctx context.Context) error {
	if _, err := r.cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return fmt.Errorf("docker: ping engine: %w: %w", errdefs.ErrUnavailable, err)
	}
	return nil
}

// Validate checks that a names an image present on the engine and that its
// metadata is valid. A missing image is a FailedPrecondition with code
// IMAGE_NOT_FOUND.
func (r *Runtime) Validate(ctx context.Context, a runtime.Artifact) error {
	if a.Type != "" && a.Type != runtime.TypeDocker {
		return fmt.Errorf("docker: artifact type %q: %w", a.Type, errdefs.ErrInvalidArgument)
	}
	if a.Location == "" {
		return fmt.Errorf("docker: empty image reference: %w", errdefs.ErrInvalidArgument)
	}
	if _, err := parseLimits(a.Metadata); err != nil {
		return err
	}
	if _, err := r.cli.ImageInspect(ctx, a.Location); err != nil {
		return r.engineError(ctx, "inspect image", a.Location, err)
	}
	return nil
}

// limits are the resource settings parsed from artifact metadata.
type limits struct {
	memory    int64
	cpuShares int64
	pids      int64
}

func parseLimits(md map[string]string) (limits, error) {
	l := limits{pids: DefaultPidsLimit}
	for key, dst := range map[string]*int64{
		MetaMemoryBytes: &l.memory,
		MetaCPUShares:   &l.cpuShares,
		MetaPidsLimit:   &l.pids,
	} {
		s, ok := md[key]
		if !ok || s == "" {
			continue
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			return limits{}, errdefs.InvalidArtifactMetadata.New("docker: artifact metadata %s=%q: not a non-negative integer", key, s)
		}
		*dst = v
	}
	if l.pids == 0 {
		l.pids = DefaultPidsLimit // never unlimited
	}
	return l, nil
}

// containerConfig builds the create request for inv.
func (r *Runtime) containerConfig(inv *runtime.Invocation) (*container.Config, *container.HostConfig, error) {
	a := inv.Artifact
	if a.Location == "" {
		return nil, nil, fmt.Errorf("docker: empty image reference: %w", errdefs.ErrInvalidArgument)
	}
	lim, err := parseLimits(a.Metadata)
	if err != nil {
		return nil, nil, err
	}
	if inv.MemoryLimitBytes > 0 {
		lim.memory = inv.MemoryLimitBytes
	}

	fn := inv.Function
	if fn == "" {
		fn = runtime.DefaultFunction
	}
	env := make([]string, 0, len(inv.Env)+3)
	for _, k := range slices.Sorted(maps.Keys(inv.Env)) {
		if k == "SPEAR_FUNCTION_NAME" || k == "SPEAR_EXECUTION_ID" || k == "SPEAR_ATTEMPT" {
			continue
		}
		env = append(env, k+"="+inv.Env[k])
	}
	env = append(env, "SPEAR_FUNCTION_NAME="+fn, "SPEAR_EXECUTION_ID="+inv.ExecutionID)
	if inv.Attempt > 0 {
		env = append(env, "SPEAR_ATTEMPT="+strconv.Itoa(int(inv.Attempt)))
	}

	cfg := &container.Config{
		Image:        a.Location,
		Env:          env,
		AttachStdin:  true,
		AttachStdout: true,
		AttachStderr: true,
		OpenStdin:    true,
		StdinOnce:    true,
		Labels: map[string]string{
			LabelManaged:   "true",
			LabelExecution: inv.ExecutionID,
			LabelNode:      r.nodeID,
		},
	}
	if fn != runtime.DefaultFunction {
		cfg.Cmd = []string{fn}
	}

	cfg.User = DefaultUser
	if u := a.Metadata[MetaUser]; u != "" {
		cfg.User = u
	}
	hc := &container.HostConfig{
		NetworkMode:    "none",
		ReadonlyRootfs: a.Metadata[MetaWritableRootfs] != "true",
		Tmpfs:          map[string]string{"/tmp": tmpfsOptions},
		Privileged:     false,
		AutoRemove:     false,
		CapDrop:        []string{"ALL"},
		// The engine's default seccomp profile applies: it is never
		// replaced, nor set to unconfined.
		SecurityOpt: []string{"no-new-privileges:true"},
		LogConfig:   container.LogConfig{Type: "none"},
		// No host paths: no binds, no volumes, no mounts.
		Binds: nil, Mounts: nil, VolumesFrom: nil,
	}
	if a.Metadata[MetaNetwork] == "true" {
		hc.NetworkMode = ""
	}
	hc.Memory = lim.memory
	if lim.memory > 0 {
		hc.MemorySwap = lim.memory // no swap on top of the limit
	}
	hc.CPUShares = lim.cpuShares
	pids := lim.pids
	hc.PidsLimit = &pids
	return cfg, hc, nil
}

// Run runs inv in a new container. Once Run has the result, the container
// is removed in the background (see removeSoon; Close waits for those
// removals), or before Run returns when too many removals are pending.
//
// inv.Input is copied to the container's standard input by a goroutine that
// may outlive Run when inv.Input blocks; it stops at the first read or
// write error. inv.Stdout and inv.Stderr are never written once Run
// returns.
func (r *Runtime) Run(ctx context.Context, inv *runtime.Invocation) (runtime.Result, error) {
	c := &containerRun{r: r, ctx: ctx, inv: inv, begin: time.Now()}
	defer c.finish()
	if err := c.create(); err != nil {
		return runtime.Result{}, err
	}
	if err := c.attach(); err != nil {
		return runtime.Result{}, err
	}
	c.watchExit()
	if err := c.start(); err != nil {
		return runtime.Result{}, err
	}
	c.stream()
	exit, err := c.waitExit()
	if err != nil {
		return runtime.Result{}, err
	}
	return c.collect(exit)
}

// sampleMemory starts sampling the memory of container id every
// r.memInterval until ctx ends, and returns a function that waits for the
// sampler to stop (so ctx must be over) and returns the largest sample, or
// 0 without sampling.
func (r *Runtime) sampleMemory(ctx context.Context, id string) func() int64 {
	if r.memInterval <= 0 {
		return func() int64 { return 0 }
	}
	var peak int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(r.memInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			res, err := r.cli.ContainerStats(ctx, id, client.ContainerStatsOptions{})
			if err != nil {
				continue // exited, gone, or ctx over
			}
			var st container.StatsResponse
			err = json.NewDecoder(res.Body).Decode(&st)
			_ = res.Body.Close()
			if err != nil {
				continue
			}
			peak = max(peak, int64(st.MemoryStats.MaxUsage), int64(st.MemoryStats.Usage))
		}
	}()
	return func() int64 {
		<-done
		return peak
	}
}

// kill sends SIGKILL to a container, ignoring "not running".
func (r *Runtime) kill(ctx context.Context, id, execID string) {
	r.signal(ctx, id, execID, "SIGKILL")
}

// signal sends sig to a container's main process, ignoring "not running".
func (r *Runtime) signal(ctx context.Context, id, execID, sig string) {
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if _, err := r.cli.ContainerKill(kctx, id, client.ContainerKillOptions{Signal: sig}); err != nil &&
		!cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
		r.log.Warn("signal container", "container", id, "execution", execID, "signal", sig, "err", err)
	}
}

// removeSoon removes a container in the background, or now when too many
// removals are pending.
func (r *Runtime) removeSoon(ctx context.Context, id, execID string) {
	select {
	case r.removals <- struct{}{}:
	default:
		r.remove(ctx, id, execID)
		return
	}
	r.removing.Go(func() {
		defer func() { <-r.removals }()
		r.remove(ctx, id, execID)
	})
}

// remove force-removes a container with a detached, bounded context.
func (r *Runtime) remove(ctx context.Context, id, execID string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if err := r.removeContainer(rctx, id); err != nil {
		r.log.Error("remove container", "container", id, "execution", execID, "err", err)
	}
}

func (r *Runtime) removeContainer(ctx context.Context, id string) error {
	_, err := r.cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err == nil || cerrdefs.IsNotFound(err) {
		return nil
	}
	// "removal already in progress" is a conflict: someone else removes it.
	if cerrdefs.IsConflict(err) {
		return nil
	}
	return err
}

// Reconcile implements runtime.Reconciler: it removes, running or not, the
// containers of this node (labels io.spear.managed=true and
// io.spear.node=NodeID), left by an earlier run of the node. It returns how
// many it removed; failures to remove individual containers are joined
// into err.
func (r *Runtime) Reconcile(ctx context.Context) (removed int, err error) {
	f := make(client.Filters).Add("label", LabelManaged+"=true")
	list, err := r.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return 0, r.engineError(ctx, "list containers", "", err)
	}
	var errs []error
	for _, c := range list.Items {
		if c.Labels[LabelNode] != r.nodeID {
			continue
		}
		execID := c.Labels[LabelExecution]
		if err := r.removeContainer(ctx, c.ID); err != nil {
			errs = append(errs, fmt.Errorf("docker: remove container %s (execution %s): %w: %w",
				c.ID, execID, errdefs.ErrUnavailable, err))
			continue
		}
		r.log.Info("removed orphan container", "container", c.ID, "execution", execID)
		removed++
	}
	return removed, errors.Join(errs...)
}

// engineError classifies an engine error: the run's context ending wins,
// then a missing image (IMAGE_NOT_FOUND, when image is the reference the
// request named), bad parameters, an unreachable engine, and anything else
// (a container that vanished mid-run included) as internal.
func (r *Runtime) engineError(ctx context.Context, op, image string, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("docker: %s: %w", op, ctx.Err())
	case cerrdefs.IsNotFound(err) && image != "":
		return errdefs.ImageNotFound.New("docker: %s: image %q not found on the engine: %v", op, image, err)
	case cerrdefs.IsInvalidArgument(err):
		return fmt.Errorf("docker: %s: %w: %w", op, errdefs.ErrInvalidArgument, err)
	case client.IsErrConnectionFailed(err), cerrdefs.IsUnavailable(err),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return fmt.Errorf("docker: %s: %w: %w", op, errdefs.ErrUnavailable, err)
	default:
		return fmt.Errorf("docker: %s: %w: %w", op, errdefs.ErrInternal, err)
	}
}
