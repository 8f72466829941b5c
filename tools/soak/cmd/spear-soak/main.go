// Command spear-soak runs a long mixed load (sync, async and stream on
// every runtime, with cancels, timeouts and failing functions) against a
// freshly built node and fails if the node leaks goroutines, file
// descriptors, memory or storage, or leaves accepted executions unfinished.
// It is not part of make test.
//
//	go run ./tools/soak/cmd/spear-soak [--duration 10m] [--rate 8]
//
// Run it from the repository root. See tools/soak for the bounds.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spear-go/spear/tools/soak"
)

func main() {
	os.Exit(run())
}

func run() int {
	var cfg soak.Config
	flag.DurationVar(&cfg.Duration, "duration", 0, "how long the load runs (default 10m)")
	flag.Float64Var(&cfg.Rate, "rate", 0, "invocations started per second (default 8)")
	flag.IntVar(&cfg.MaxInFlight, "max-in-flight", 0, "concurrent invocations at most (default 16)")
	flag.DurationVar(&cfg.Warmup, "warmup", 0, "load before the start sample (default 20s)")
	flag.DurationVar(&cfg.Settle, "settle", 0, "how long accepted async executions may take to end after the load (default 60s)")
	flag.Int64Var(&cfg.MaxStorageGrowth, "max-storage-growth", 0, "bound on JetStream storage growth in bytes (default 512 MiB)")
	flag.StringVar(&cfg.Docker, "docker", "auto", "docker runtime of the node: auto or off")
	flag.StringVar(&cfg.Bin, "bin", "", "prebuilt spear binary (default: build one)")
	flag.BoolVar(&cfg.Keep, "keep", false, "keep the work directory (data dir and node log)")
	root := flag.String("root", ".", "repository root")
	flag.Parse()

	abs, err := filepath.Abs(*root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "spear-soak:", err)
		return 1
	}
	cfg.Root = abs
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := soak.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "spear-soak:", err)
		return 1
	}
	if len(rep.Failures) > 0 {
		return 1
	}
	return 0
}
