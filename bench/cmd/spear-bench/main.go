// Command spear-bench benchmarks Spear against baselines that do only the
// irreducible work, in the same run, and prints one table of ratios; it
// also writes the table as JSON and Markdown (with a description of the
// machine) under --out.
//
//	go run ./bench/cmd/spear-bench [--quick] [--rows sync-wasm,async,...] [--out bench/results]
//
// Run it from the repository root. See bench/harness and bench/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spear-go/spear/bench/harness"
)

func main() {
	os.Exit(run())
}

func run() int {
	quick := flag.Bool("quick", false, "fewer, shorter rounds and smaller populations (about a minute)")
	rows := flag.String("rows", "", "comma-separated row groups to run (default all): "+strings.Join(harness.Groups, ","))
	out := flag.String("out", "bench/results", "directory for latest.json and latest.md; empty writes nothing")
	docker := flag.String("docker", "auto", "docker rows: auto (if an engine answers) or off")
	root := flag.String("root", ".", "repository root")
	flag.Parse()

	abs, err := filepath.Abs(*root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "spear-bench:", err)
		return 1
	}
	if _, err := os.Stat(filepath.Join(abs, "go.mod")); err != nil {
		fmt.Fprintln(os.Stderr, "spear-bench: run from the repository root (or pass --root):", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var groups []string
	if *rows != "" {
		groups = strings.Split(*rows, ",")
	}
	rep, err := harness.Run(ctx, harness.Options{
		Root: abs, Quick: *quick, Rows: groups, Docker: *docker, Log: os.Stderr,
	})
	if rep == nil {
		fmt.Fprintln(os.Stderr, "spear-bench:", err)
		return 1
	}
	fmt.Println()
	harness.WriteTable(os.Stdout, rep)
	if *out != "" {
		dir := *out
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(abs, dir)
		}
		files, werr := harness.Save(dir, rep)
		if werr != nil {
			fmt.Fprintln(os.Stderr, "spear-bench: writing results:", werr)
			return 1
		}
		fmt.Println("\nwrote", strings.Join(files, ", "))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "spear-bench:", err)
		return 1
	}
	return 0
}
