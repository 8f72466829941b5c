// Package cli implements the spear command-line tool: a client of a node's
// spearlet.FunctionService gRPC API (task, invoke, exec, health and stats
// commands), plus `spear serve`, which runs a node.
//
// Main is the entry point. All state lives in an app value handed to the
// subcommand constructors; commands return exit codes instead of exiting.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

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

// Exit codes.
const (
	// ExitOK: the command succeeded; for executions, status COMPLETED.
	ExitOK = 0
	// ExitFailed: the execution FAILED, or the node answered that the
	// operation did not succeed (not found, rejected, not deleted, unhealthy).
	ExitFailed = 1
	// ExitUsage: a usage error, or an RPC error (the node could not be reached
	// or answered with a gRPC error status).
	ExitUsage = 2
	// ExitTimeout: the execution ended with status TIMEOUT.
	ExitTimeout = 124
	// ExitCancelled: the execution was CANCELLED, or the CLI was interrupted.
	ExitCancelled = 130
)

const (
	// defaultAddr is the node's default gRPC address.
	defaultAddr = "127.0.0.1:50052"
	// addrEnv overrides defaultAddr.
	addrEnv = "SPEAR_ADDR"
	// defaultTimeout is the default deadline of a single RPC.
	defaultTimeout = 30 * time.Second
)

const exitCodesHelp = `Exit codes:
  0    success (execution COMPLETED)
  1    execution FAILED, or the node reported the operation did not succeed
  2    usage error or RPC error
  124  execution TIMEOUT
  130  execution CANCELLED, or interrupted`

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

	conn *grpc.ClientConn
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
	return &app{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
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
			"them, follow executions, and inspect the node.\n\n" + exitCodesHelp,
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
	pf.StringVar(&a.addr, "addr", addr, "node gRPC address (env "+addrEnv+")")
	pf.BoolVar(&a.json, "json", false, "machine output: protojson of the response messages, one object per line")
	pf.DurationVar(&a.timeout, "timeout", defaultTimeout, "RPC timeout (sync/stream invoke: execution timeout + margin)")
	a.creds.flags(pf)

	root.AddCommand(
		(&taskCommands{a}).newTaskCmd(),
		(&invokeCommands{a}).newInvokeCmd(),
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
		target := a.addr
		for _, scheme := range []string{"http://", "h2c://", "grpc://", "https://", "grpcs://"} {
			target = strings.TrimPrefix(target, scheme)
		}
		if target == "" {
			return nil, usageErrorf("empty --addr")
		}
		opts, err := a.creds.dialOptions(a.addr)
		if err != nil {
			return nil, err
		}
		conn, err := grpc.NewClient(target, opts...)
		if err != nil {
			return nil, usageErrorf("address %q: %v", a.addr, err)
		}
		a.conn = conn
	}
	return spearlet.NewFunctionServiceClient(a.conn), nil
}

// exitError ends a command with a specific exit code. msg, when set, is
// printed to stderr as "error: msg".
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string {
	if e.msg == "" {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.msg
}

// exitWith returns an error that ends the command with code, printing
// nothing more.
func exitWith(code int) error {
	if code == ExitOK {
		return nil
	}
	return &exitError{code: code}
}

// failf returns an error that prints "error: <msg>" and exits with
// ExitFailed.
func failf(format string, args ...any) error {
	return &exitError{code: ExitFailed, msg: fmt.Sprintf(format, args...)}
}

// usageErrorf returns an error that prints "error: <msg>" and exits with
// ExitUsage.
func usageErrorf(format string, args ...any) error {
	return &exitError{code: ExitUsage, msg: fmt.Sprintf(format, args...)}
}

// exitCode reports err on stderr and maps it to an exit code.
func (a *app) exitCode(ctx context.Context, err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(a.stderr, "error:", ee.msg)
		}
		return ee.code
	}
	var re *rpcError
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.As(err, &re) && re.st.Code() == codes.Canceled) {
		fmt.Fprintln(a.stderr, "error: interrupted")
		return ExitCancelled
	}
	fmt.Fprintln(a.stderr, "error:", err)
	return ExitUsage
}
