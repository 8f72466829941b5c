// Package cli implements the spear command-line tool: a client of a node's
// spearlet.FunctionService gRPC API (task, invoke, exec, health and stats
// commands), plus `spear serve`, which runs a node.
//
// Main is the entry point. All state lives in an app value handed to the
// subcommand constructors; commands return exit codes instead of exiting.
package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/spear-go/spear/api/spearlet"
)

// The commands, by noun; each group shares the app (flags, client,
// output).
type (
	taskCommands   struct{ *app }
	invokeCommands struct{ *app }
	execCommands   struct{ *app }
	nodeCommands   struct{ *app }
	tokenCommands  struct{ *app }
)

const (
	// defaultAddr is the node's default gRPC address.
	defaultAddr = "127.0.0.1:50052"
	// addrEnv overrides defaultAddr.
	addrEnv = "SPEAR_ADDR"
	// defaultTimeout is the default deadline of a single RPC.
	defaultTimeout = 30 * time.Second
)

// Main runs the spear CLI with args (without the program name) and returns
// the process exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return newApp(os.Stdin, stdout, stderr, os.Getenv).run(ctx, args)
}

// app is the state shared by all commands of one CLI run.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string

	// Global flags.
	addr    string
	json    bool
	timeout time.Duration
	creds   clientAuth

	conn   *grpc.ClientConn
	dialed string // the target conn dials
	// isTerminal says whether a writer is a terminal (tests replace it).
	isTerminal func(io.Writer) bool
	// started is set once a command passed argument and flag validation;
	// errors before that are usage errors and get a help hint.
	started bool
}

func newApp(stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) *app {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	return &app{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv, isTerminal: isTerminal}
}

// run executes one command line and returns its exit code.
func (a *app) run(ctx context.Context, args []string) int {
	root := a.newRootCmd()
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if a.conn != nil {
		_ = a.conn.Close()
		a.conn = nil
	}
	code := a.exitCode(ctx, err)
	if err != nil && !a.started && code == ExitUsage && cmd != nil {
		fmt.Fprintf(a.stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

func (a *app) newRootCmd() *cobra.Command {
	addr := a.getenv(addrEnv)
	if addr == "" {
		addr = defaultAddr
	}
	root := &cobra.Command{
		Use:   "spear",
		Short: "Spear function-execution platform CLI",
		Long: "spear talks to a Spear node (spearlet) over gRPC: register tasks, invoke\n" +
			"them, follow executions, and inspect the node.\n\n" + exitCodesHelp(),
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			// Cobra checks these after this hook; check them first so
			// their failures count as usage errors.
			if err := cmd.ValidateRequiredFlags(); err != nil {
				return err
			}
			if err := cmd.ValidateFlagGroups(); err != nil {
				return err
			}
			if err := a.creds.resolve(cmd.Root().PersistentFlags(), a.getenv); err != nil {
				return err
			}
			a.started = true
			return nil
		},
	}
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)

	pf := root.PersistentFlags()
	pf.StringVar(&a.addr, "addr", addr, "node address, HOST[:PORT] (port 50052 when none is given; env "+addrEnv+")")
	pf.BoolVar(&a.json, "json", false, "machine output: protojson of the response messages, one object per line")
	pf.DurationVar(&a.timeout, "timeout", defaultTimeout, "RPC timeout (sync/stream invoke: execution timeout + margin)")
	a.creds.flags(pf)

	root.AddCommand(
		(&taskCommands{a}).newTaskCmd(),
		(&invokeCommands{a}).newInvokeCmd(),
		(&graphCommands{&invokeCommands{a}}).newPipeCmd(),
		(&graphCommands{&invokeCommands{a}}).newGraphCmd(),
		(&execCommands{a}).newExecCmd(),
		(&nodeCommands{a}).newHealthCmd(),
		(&nodeCommands{a}).newStatsCmd(),
		(&nodeCommands{a}).newNodeCmd(),
		(&nodeCommands{a}).newServeCmd(),
		(&tokenCommands{a}).newTokenCmd(),
	)
	return root
}

// client returns the FunctionService client, connecting on first use.
func (a *app) client() (spearlet.FunctionServiceClient, error) {
	if a.conn == nil {
		target, err := dialTarget(a.addr)
		if err != nil {
			return nil, err
		}
		opts, err := a.creds.dialOptions(a.addr)
		if err != nil {
			return nil, err
		}
		conn, err := grpc.NewClient(target, opts...)
		if err != nil {
			return nil, usageErrorf("--addr %q: %v", a.addr, err)
		}
		a.conn, a.dialed = conn, target
	}
	return spearlet.NewFunctionServiceClient(a.conn), nil
}

// target is the address the CLI dials (or would dial), for messages.
func (a *app) target() string {
	if a.dialed != "" {
		return a.dialed
	}
	if t, err := dialTarget(a.addr); err == nil {
		return t
	}
	return a.addr
}

// dialTarget turns --addr into a gRPC target: without a scheme
// (http://, grpcs://, ... only say whether to use TLS) and, when it names
// no port, with the node's default port (not 443, gRPC's default).
// Targets of gRPC's own schemes (unix:, dns:///) are left alone.
func dialTarget(addr string) (string, error) {
	t := addr
	for _, scheme := range []string{"http://", "h2c://", "grpc://", "https://", "grpcs://"} {
		t = strings.TrimPrefix(t, scheme)
	}
	t = strings.TrimSuffix(t, "/")
	switch {
	case t == "":
		return "", usageErrorf("empty --addr: want HOST[:PORT] (default %s)", defaultAddr)
	case strings.Contains(t, ":/") || strings.HasPrefix(t, "unix:"):
		return t, nil
	}
	host, port, err := net.SplitHostPort(t)
	if err != nil { // no port, or a bare IPv6 address
		host, port = strings.TrimSuffix(strings.TrimPrefix(t, "["), "]"), ""
	}
	if port == "" {
		_, port, _ = net.SplitHostPort(defaultAddr)
	}
	return net.JoinHostPort(host, port), nil
}
