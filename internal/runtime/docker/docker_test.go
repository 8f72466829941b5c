package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/runtime"
	"github.com/spear-go/spear/internal/runtime/conformance"
)

// TestMain runs the tests, then checks that they left no Spear container
// behind on the engine.
func TestMain(m *testing.M) {
	code := m.Run()
	if err := checkNoLeftovers(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// checkNoLeftovers lists every container labelled io.spear.managed=true by
// this test binary's node ID. No engine is not a failure (the tests skipped
// or failed already).
func checkNoLeftovers() error {
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return nil
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return nil
	}
	left, err := containersOf(ctx, cli, LabelNode+"="+testNodeID())
	if err != nil {
		return fmt.Errorf("listing leftover containers: %w", err)
	}
	if len(left) > 0 {
		return fmt.Errorf("FAIL: %d container(s) left behind:\n%s", len(left), strings.Join(left, "\n"))
	}
	return nil
}

func TestContainerConfig(t *testing.T) {
	rt := &Runtime{nodeID: "node-1"}
	inv := &runtime.Invocation{
		ExecutionID: "exec-1",
		Artifact:    imageArtifact("img:1", nil),
		Function:    "hello",
		Env:         map[string]string{"B": "2", "A": "1", "SPEAR_EXECUTION_ID": "spoofed", "SPEAR_ATTEMPT": "spoofed"},
		Attempt:     3,
	}
	cfg, hc, err := rt.containerConfig(inv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Image != "img:1" || !slices.Equal(cfg.Cmd, []string{"hello"}) {
		t.Errorf("image %q cmd %q", cfg.Image, cfg.Cmd)
	}
	wantEnv := []string{"A=1", "B=2", "SPEAR_FUNCTION_NAME=hello", "SPEAR_EXECUTION_ID=exec-1", "SPEAR_ATTEMPT=3"}
	if !slices.Equal(cfg.Env, wantEnv) {
		t.Errorf("env = %q, want %q", cfg.Env, wantEnv)
	}
	if !cfg.OpenStdin || !cfg.StdinOnce || !cfg.AttachStdin || !cfg.AttachStdout || !cfg.AttachStderr || cfg.Tty {
		t.Errorf("stdio config: %+v", cfg)
	}
	wantLabels := map[string]string{LabelManaged: "true", LabelExecution: "exec-1", LabelNode: "node-1"}
	if fmt.Sprint(cfg.Labels) != fmt.Sprint(wantLabels) {
		t.Errorf("labels = %v, want %v", cfg.Labels, wantLabels)
	}
	if hc.NetworkMode != "none" || !hc.ReadonlyRootfs || hc.Privileged || hc.AutoRemove {
		t.Errorf("host config: network %q readonly %v privileged %v autoremove %v",
			hc.NetworkMode, hc.ReadonlyRootfs, hc.Privileged, hc.AutoRemove)
	}
	if hc.PidsLimit == nil || *hc.PidsLimit != DefaultPidsLimit || hc.Memory != 0 || hc.CPUShares != 0 {
		t.Errorf("limits: pids %v memory %d cpu shares %d", hc.PidsLimit, hc.Memory, hc.CPUShares)
	}
	checkHardened(t, cfg, hc)

	// Default function: image's own command.
	for _, fn := range []string{"", runtime.DefaultFunction} {
		inv.Function = fn
		cfg, _, err := rt.containerConfig(inv)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Cmd != nil || !slices.Contains(cfg.Env, "SPEAR_FUNCTION_NAME="+runtime.DefaultFunction) {
			t.Errorf("function %q: cmd %q env %q", fn, cfg.Cmd, cfg.Env)
		}
	}

	// Metadata relaxes and tunes.
	inv.Artifact.Metadata = map[string]string{
		MetaNetwork: "true", MetaWritableRootfs: "true",
		MetaMemoryBytes: "67108864", MetaCPUShares: "512", MetaPidsLimit: "32",
	}
	_, hc, err = rt.containerConfig(inv)
	if err != nil {
		t.Fatal(err)
	}
	if hc.NetworkMode == "none" || hc.ReadonlyRootfs || hc.Memory != 64<<20 || hc.CPUShares != 512 || *hc.PidsLimit != 32 {
		t.Errorf("with metadata: network %q readonly %v memory %d shares %d pids %d",
			hc.NetworkMode, hc.ReadonlyRootfs, hc.Memory, hc.CPUShares, *hc.PidsLimit)
	}
	inv.MemoryLimitBytes = 32 << 20 // the invocation's limit wins
	if _, hc, _ = rt.containerConfig(inv); hc.Memory != 32<<20 || hc.MemorySwap != 32<<20 {
		t.Errorf("memory = %d swap %d, want the invocation's %d for both", hc.Memory, hc.MemorySwap, 32<<20)
	}
	inv.Artifact.Metadata = map[string]string{MetaUser: "1000:1000", MetaPidsLimit: "0"}
	if cfg, hc, _ := rt.containerConfig(inv); cfg.User != "1000:1000" || *hc.PidsLimit != DefaultPidsLimit {
		t.Errorf("user %q pids %d, want the metadata's user and, for pids_limit 0, the default", cfg.User, *hc.PidsLimit)
	}

	inv.Artifact.Metadata = map[string]string{MetaMemoryBytes: "lots"}
	if _, _, err := rt.containerConfig(inv); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("bad memory_bytes: err = %v, want invalid argument", err)
	}
	inv.Artifact = runtime.Artifact{}
	if _, _, err := rt.containerConfig(inv); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("empty location: err = %v, want invalid argument", err)
	}
}

// TestDocker runs everything that needs an engine, sharing the images.
func TestDocker(t *testing.T) {
	rt := newRuntime(t, Options{})
	fx := fixtureImage(t, rt)
	probe := probeImage(t, rt)

	t.Run("Conformance", func(t *testing.T) {
		conformance.Run(t, rt, fx)
	})

	t.Run("ColdStart", func(t *testing.T) {
		out, _, res, err := run(t.Context(), rt, fx.Echo.Artifact, fx.Echo.Function, "exec-cold", "hi")
		if err != nil || res.ExitCode != 0 || out != "hi" {
			t.Fatalf("echo: out %q res %+v err %v", out, res, err)
		}
		if res.Startup <= 0 {
			t.Fatalf("Result.Startup = %v, want the measured start-up", res.Startup)
		}
		t.Logf("cold start (create+attach+wait+start) of echo: %v", res.Startup)
	})

	t.Run("CloseWaitsForRemovals", func(t *testing.T) {
		// Containers are removed in the background after Run; Close
		// returns only once they are gone.
		own := newRuntime(t, Options{})
		for i := range 3 {
			if _, _, _, err := run(t.Context(), own, fx.Echo.Artifact, fx.Echo.Function, fmt.Sprintf("exec-close-%d", i), "hi"); err != nil {
				t.Fatal(err)
			}
		}
		if err := own.Close(t.Context()); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if left, err := containersOf(t.Context(), rt.cli, fmt.Sprintf("%s=exec-close-%d", LabelExecution, i)); err != nil || len(left) > 0 {
				t.Fatalf("after Close: containers %v, err %v", left, err)
			}
		}
	})

	t.Run("ValidateImageNotFound", func(t *testing.T) {
		err := rt.Validate(t.Context(), imageArtifact("spear-no-such-image:nope", nil))
		if !errors.Is(err, errdefs.ErrFailedPrecondition) || errdefs.CodeOf(err) != "IMAGE_NOT_FOUND" {
			t.Fatalf("Validate(missing) = %v (code %s), want IMAGE_NOT_FOUND", err, errdefs.CodeOf(err))
		}
		if err := rt.Validate(t.Context(), fx.Echo.Artifact); err != nil {
			t.Fatalf("Validate(fixture) = %v", err)
		}
		err = rt.Validate(t.Context(), imageArtifact(fixtureTag, map[string]string{MetaCPUShares: "-1"}))
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Fatalf("Validate(bad metadata) = %v, want invalid argument", err)
		}
	})

	t.Run("RunImageNotFound", func(t *testing.T) {
		_, _, _, err := run(t.Context(), rt, imageArtifact("spear-no-such-image:nope", nil), "", "exec-missing", "")
		if errdefs.CodeOf(err) != "IMAGE_NOT_FOUND" {
			t.Fatalf("Run(missing image) = %v (code %s), want IMAGE_NOT_FOUND", err, errdefs.CodeOf(err))
		}
	})

	t.Run("NetworkDisabledByDefault", func(t *testing.T) {
		out, stderr, res, err := run(t.Context(), rt, imageArtifact(probe, nil), "net", "exec-net", "")
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("probe net: res %+v err %v stderr %q", res, err, stderr)
		}
		if out != "lo\n" {
			t.Fatalf("interfaces = %q, want only lo", out)
		}
	})

	t.Run("ReadOnlyRootfs", func(t *testing.T) {
		out, stderr, res, err := run(t.Context(), rt, imageArtifact(probe, nil), "rootfs", "exec-ro", "")
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("probe rootfs: res %+v err %v stderr %q", res, err, stderr)
		}
		if !strings.HasPrefix(out, "read-only:") || !strings.Contains(out, "read-only file system") {
			t.Fatalf("probe rootfs = %q, want a read-only file system error", out)
		}
		// Writing to / also needs its owner, root: both opted into.
		a := imageArtifact(probe, map[string]string{MetaWritableRootfs: "true", MetaUser: "0:0"})
		out, stderr, _, err = run(t.Context(), rt, a, "rootfs", "exec-rw", "")
		if err != nil || out != "writable\n" {
			t.Fatalf("probe rootfs with writable_rootfs=true = %q, %v (stderr %q)", out, err, stderr)
		}
	})

	t.Run("LargeInputOutput", func(t *testing.T) {
		in := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
		var out bytes.Buffer
		res, err := rt.Run(t.Context(), &runtime.Invocation{
			ExecutionID: "exec-cat", Artifact: imageArtifact(probe, nil), Function: "cat",
			Input: bytes.NewReader(in), Stdout: &out, Stderr: io.Discard,
		})
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("cat: res %+v err %v", res, err)
		}
		if !bytes.Equal(out.Bytes(), in) {
			t.Fatalf("cat returned %d bytes, want the %d sent", out.Len(), len(in))
		}
	})

	t.Run("ExitWithStdinOpen", func(t *testing.T) {
		// The function never reads its input, which never ends: Run still
		// returns when the function exits.
		pr, pw := io.Pipe()
		defer pw.Close()
		var out bytes.Buffer
		res, err := rt.Run(t.Context(), &runtime.Invocation{
			ExecutionID: "exec-stdin-open", Artifact: imageArtifact(probe, nil), Function: "net",
			Input: pr, Stdout: &out, Stderr: io.Discard,
		})
		if err != nil || res.ExitCode != 0 || out.String() != "lo\n" {
			t.Fatalf("net with open stdin: out %q res %+v err %v", out.String(), res, err)
		}
	})

	t.Run("Environ", func(t *testing.T) {
		var out bytes.Buffer
		res, err := rt.Run(t.Context(), &runtime.Invocation{
			ExecutionID: "exec-environ", Artifact: fx.Echo.Artifact, Function: "environ",
			Input: strings.NewReader(""), Stdout: &out, Stderr: io.Discard,
			Env: map[string]string{"A": "1", "SPEAR_EXECUTION_ID": "spoofed", "PATH": "/fn-bin"},
		})
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("environ: res %+v err %v", res, err)
		}
		env := strings.Split(strings.TrimSpace(out.String()), "\n")
		for _, kv := range []string{"A=1", "PATH=/fn-bin", "SPEAR_EXECUTION_ID=exec-environ", "SPEAR_FUNCTION_NAME=environ"} {
			if !slices.Contains(env, kv) {
				t.Errorf("environment %q lacks %q", env, kv)
			}
		}
		if slices.Contains(env, "SPEAR_EXECUTION_ID=spoofed") {
			t.Errorf("environment %q: SPEAR_EXECUTION_ID taken from inv.Env", env)
		}
	})

	t.Run("HostConfigOnEngine", func(t *testing.T) {
		// Keep a container alive (cat on a stdin we hold open), look at it
		// on the engine, then cancel the run.
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		pr, pw := io.Pipe()
		defer pw.Close()
		a := imageArtifact(probe, map[string]string{MetaCPUShares: "256", MetaPidsLimit: "64"})
		done := make(chan error, 1)
		go func() {
			_, err := rt.Run(ctx, &runtime.Invocation{
				ExecutionID: "exec-inspect", Artifact: a, Function: "cat",
				Input: pr, Stdout: io.Discard, Stderr: io.Discard, MemoryLimitBytes: 64 << 20,
			})
			done <- err
		}()
		var c container.InspectResponse
		for deadline := time.Now().Add(20 * time.Second); ; {
			list, err := rt.cli.ContainerList(t.Context(), client.ContainerListOptions{
				Filters: make(client.Filters).Add("label", LabelExecution+"=exec-inspect"),
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(list.Items) == 1 {
				ins, err := rt.cli.ContainerInspect(t.Context(), list.Items[0].ID, client.ContainerInspectOptions{})
				if err != nil {
					t.Fatal(err)
				}
				c = ins.Container
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("container of exec-inspect never ran")
			}
			time.Sleep(20 * time.Millisecond)
		}
		hc := c.HostConfig
		if hc.NetworkMode != "none" || !hc.ReadonlyRootfs || hc.Privileged || hc.AutoRemove ||
			hc.Memory != 64<<20 || hc.CPUShares != 256 || hc.PidsLimit == nil || *hc.PidsLimit != 64 {
			t.Errorf("host config on the engine: network %q ro %v priv %v autorm %v mem %d shares %d pids %v",
				hc.NetworkMode, hc.ReadonlyRootfs, hc.Privileged, hc.AutoRemove, hc.Memory, hc.CPUShares, hc.PidsLimit)
		}
		checkHardened(t, c.Config, hc)
		if len(c.Mounts) != 0 {
			t.Errorf("mounts on the engine: %+v, want none", c.Mounts)
		}
		if c.AppArmorProfile == "unconfined" {
			t.Errorf("AppArmor profile %q", c.AppArmorProfile)
		}
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Run after cancel = %v, want context.Canceled", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
		waitRemoved(t, rt, "exec-inspect")
	})

	t.Run("SandboxFromInside", func(t *testing.T) {
		// What the function sees: not root, no capabilities, no new
		// privileges, seccomp filtering (mode 2) — the engine's default
		// profile — and a writable /tmp on a read-only root.
		info, err := rt.cli.Info(t.Context(), client.InfoOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(info.Info.SecurityOptions, func(o string) bool { return strings.Contains(o, "seccomp") }) {
			t.Fatalf("the engine has no seccomp support (security options %q): the default profile cannot apply", info.Info.SecurityOptions)
		}
		out, stderr, res, err := run(t.Context(), rt, imageArtifact(probe, nil), "sandbox", "exec-sandbox", "")
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("probe sandbox: res %+v err %v stderr %q", res, err, stderr)
		}
		want := "uid=65534 gid=65534\nCapEff: 0000000000000000\nNoNewPrivs: 1\nSeccomp: 2\ntmp: writable\n"
		if out != want {
			t.Fatalf("probe sandbox:\n%s\nwant:\n%s", out, want)
		}
	})

	t.Run("SampleImageHardened", func(t *testing.T) {
		// The sample container function (FROM scratch, samples/docker)
		// runs under every default.
		tag := sampleImage(t, rt)
		out, stderr, res, err := run(t.Context(), rt, imageArtifact(tag, nil), "", "exec-sample", "hello")
		if err != nil || res.ExitCode != 0 || out != "HELLO" {
			t.Fatalf("sample image: out %q stderr %q res %+v err %v", out, stderr, res, err)
		}
	})

	t.Run("DeadlineRemovesContainer", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		pr, pw := io.Pipe()
		defer pw.Close()
		start := time.Now()
		res, err := rt.Run(ctx, &runtime.Invocation{
			ExecutionID: "exec-deadline", Artifact: imageArtifact(probe, nil), Function: "cat",
			Input: pr, Stdout: io.Discard, Stderr: io.Discard,
		})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Run past deadline = %+v, %v; want DeadlineExceeded", res, err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("Run took %v to return after its deadline", d)
		}
		waitRemoved(t, rt, "exec-deadline")
	})

	t.Run("GraceRunsOut", func(t *testing.T) {
		// A function that ignores SIGTERM is killed once the grace is over,
		// and its container removed.
		ctx, cancel := context.WithCancelCause(t.Context())
		defer cancel(nil)
		ready := make(chan struct{})
		out := &notifyWriter{notify: ready}
		done := make(chan error, 1)
		go func() {
			_, err := rt.Run(ctx, &runtime.Invocation{
				ExecutionID: "exec-grace", Artifact: imageArtifact(probe, nil), Function: "ignoreterm",
				Input: strings.NewReader(""), Stdout: out, Stderr: io.Discard,
			})
			done <- err
		}()
		select {
		case <-ready:
		case err := <-done:
			t.Fatalf("Run returned before the function was ready: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("ignoreterm never wrote ready")
		}
		cancel(&runtime.GracefulStop{Grace: 300 * time.Millisecond, Reason: context.Canceled})
		select {
		case err := <-done:
			var gs *runtime.GracefulStop
			if !errors.Is(err, context.Canceled) || !errors.As(err, &gs) {
				t.Fatalf("Run after a graceful stop = %v, want context.Canceled and the GracefulStop cause", err)
			}
			t.Logf("Run: %v", err)
		case <-time.After(20 * time.Second):
			t.Fatal("Run did not return after the grace ran out (hang)")
		}
		waitRemoved(t, rt, "exec-grace")
	})

	t.Run("Reconcile", func(t *testing.T) {
		// A runtime of its own, so that containers of the other subtests
		// still being removed in the background are not counted.
		own := newRuntime(t, Options{NodeID: testNodeID() + "-reconcile"})
		create := func(execID, node string) string {
			t.Helper()
			res, err := rt.cli.ContainerCreate(t.Context(), client.ContainerCreateOptions{
				Config: &container.Config{
					// cat on a stdin that stays open: runs until killed.
					Image: probe, Cmd: []string{"cat"}, OpenStdin: true,
					Labels: map[string]string{LabelManaged: "true", LabelExecution: execID, LabelNode: node},
				},
				HostConfig: &container.HostConfig{NetworkMode: "none"},
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_, _ = rt.cli.ContainerRemove(context.Background(), res.ID, client.ContainerRemoveOptions{Force: true})
			})
			return res.ID
		}
		orphans := []string{create("exec-orphan", own.nodeID), create("exec-orphan-2", own.nodeID)}
		other := create("exec-other-node", own.nodeID+"-other")
		// A running orphan too.
		running := create("exec-orphan-running", own.nodeID)
		orphans = append(orphans, running)
		if _, err := rt.cli.ContainerStart(t.Context(), running, client.ContainerStartOptions{}); err != nil {
			t.Fatal(err)
		}

		var rec runtime.Reconciler = own
		removed, err := rec.Reconcile(t.Context())
		if err != nil || removed != len(orphans) {
			t.Fatalf("Reconcile = %d, %v; want %d removed", removed, err, len(orphans))
		}
		exists := func(id string) bool {
			_, err := rt.cli.ContainerInspect(t.Context(), id, client.ContainerInspectOptions{})
			return err == nil
		}
		for _, id := range orphans {
			if exists(id) {
				t.Errorf("orphan container %.12s still exists", id)
			}
		}
		if !exists(other) {
			t.Error("Reconcile removed another node's container")
		}
	})

	t.Run("MemorySampling", func(t *testing.T) {
		mrt := newRuntime(t, Options{MemorySampleInterval: 50 * time.Millisecond})
		pr, pw := io.Pipe()
		out := &notifyWriter{notify: make(chan struct{})}
		go func() {
			defer pw.Close()
			_, _ = pw.Write([]byte("hello"))
			select {
			case <-out.notify: // running: it echoed
			case <-t.Context().Done():
				return
			}
			// The engine has served several samples of it: so has it the
			// runtime's sampler, which asks as often.
			waitStats(t, rt, "exec-mem", 3)
		}()
		res, err := mrt.Run(t.Context(), &runtime.Invocation{
			ExecutionID: "exec-mem", Artifact: imageArtifact(probe, nil), Function: "cat",
			Input: pr, Stdout: out, Stderr: io.Discard,
		})
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("cat: res %+v err %v", res, err)
		}
		if res.MemoryUsedBytes <= 0 {
			t.Fatalf("MemoryUsedBytes = %d after a run sampled every 50ms, want > 0", res.MemoryUsedBytes)
		}
		t.Logf("MemoryUsedBytes = %d", res.MemoryUsedBytes)
	})

}

// BenchmarkColdStart runs the echo fixture once per iteration: create,
// attach, start, wait, remove. cold-ms/op is the time until the container
// was running.
func BenchmarkColdStart(b *testing.B) {
	var total time.Duration
	rt := newRuntime(b, Options{})
	fx := fixtureImage(b, rt)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		var out bytes.Buffer
		res, err := rt.Run(ctx, &runtime.Invocation{
			ExecutionID: fmt.Sprintf("bench-%d", i), Artifact: fx.Echo.Artifact, Function: fx.Echo.Function,
			Input: strings.NewReader("ping"), Stdout: &out, Stderr: io.Discard,
		})
		if err != nil || res.ExitCode != 0 || out.String() != "ping" {
			b.Fatalf("echo: out %q res %+v err %v", out.String(), res, err)
		}
		total += res.Startup
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "cold-ms/op")
}

func TestEngineDown(t *testing.T) {
	rt, err := New(t.Context(), Options{Host: "unix://" + t.TempDir() + "/no-engine.sock", NodeID: testNodeID()})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close(t.Context())
	if err := rt.Ping(t.Context()); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("Ping = %v, want unavailable", err)
	}
	_, _, _, err = run(t.Context(), rt, imageArtifact(fixtureTag, nil), "echo", "exec-down", "x")
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("Run = %v, want unavailable", err)
	}
	if err := rt.Validate(t.Context(), imageArtifact(fixtureTag, nil)); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("Validate = %v, want unavailable", err)
	}
	if _, err := rt.Reconcile(t.Context()); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("Reconcile = %v, want unavailable", err)
	}
}
