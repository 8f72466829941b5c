package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/errdefs"
)

// invokeMargin is added to the execution timeout to get the deadline of a
// sync or stream invocation, leaving room for queueing and transport.
const invokeMargin = 10 * time.Second

type invokeOpts struct {
	mode      string
	input     string
	function  string
	timeoutMs int64
	env       []string
	retries   int32
	execID    string
	priority  int32
	idemKey   string
	callback  string
	quiet     bool
}

func (a *invokeCommands) newInvokeCmd() *cobra.Command {
	var o invokeOpts
	cmd := &cobra.Command{
		Use:   "invoke TASK",
		Short: "Invoke a registered task",
		Long: `Invoke the registered task TASK.

The input (--input) is passed to the function's stdin: "@FILE" reads a file,
"-" reads stdin, anything else is sent literally. Without --input the
function gets no input.

Modes:
  sync    wait for the result; print the output raw to stdout and a failure
          (error code and message) to stderr
  async   return at once; print the execution id (only the id with --quiet
          or when stdout is not a terminal; follow it with "spear exec
          wait ID")
  stream  print output chunks as the function produces them

On a terminal, output that does not end with a newline gets one; piped or
redirected, the output's bytes are written exactly.

--priority orders waiting work when the node's workers are saturated
(higher first, 0 is normal, negative is below normal). --idempotency-key
makes retries of the same invocation safe: within the node's idempotency
window the same key for the same task returns the original execution
instead of running the function again. --callback-url asks the node to POST
the execution's final record (JSON) to an http(s) URL when it ends.

The deadline of sync and stream calls is --timeout-ms plus a margin of 10s
(without --timeout-ms: --timeout if given, else none; the node applies its
default execution timeout).

async exits 0 once the invocation is accepted; sync and stream exit with
the execution's outcome.

` + exitCodesHelp(),
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.invoke(cmd, args[0], &o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.mode, "mode", "m", "sync", "execution mode: sync, async or stream")
	f.StringVarP(&o.input, "input", "i", "", `function input: @FILE, "-" for stdin, or literal text`)
	f.StringVar(&o.function, "function", "", "function name within the task")
	f.Int64Var(&o.timeoutMs, "timeout-ms", 0, "execution timeout in milliseconds (0: node default)")
	f.StringArrayVarP(&o.env, "env", "e", nil, "environment variable KEY=VALUE (repeatable)")
	f.Int32Var(&o.retries, "retries", 0, "maximum retries (async executions)")
	f.StringVar(&o.execID, "execution-id", "", "execution id to use")
	f.Int32Var(&o.priority, "priority", 0, "scheduling priority: higher runs first when workers are saturated (0: normal)")
	f.StringVar(&o.idemKey, "idempotency-key", "", "key that makes repeating this invocation return the original execution")
	f.StringVar(&o.callback, "callback-url", "", "http(s) URL the node POSTs the final execution record to")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "async: print only the execution id (as when stdout is not a terminal)")
	return cmd
}

func (a *invokeCommands) invoke(cmd *cobra.Command, taskID string, o *invokeOpts) error {
	mode, env, err := o.check()
	if err != nil {
		return err
	}
	req := &spearlet.InvokeFunctionRequest{
		InvocationType: spearlet.InvocationType_INVOCATION_TYPE_EXISTING_TASK,
		TaskId:         taskID,
		FunctionName:   o.function,
		ExecutionMode:  mode,
		Wait:           mode == spearlet.ExecutionMode_EXECUTION_MODE_SYNC,
		Priority:       o.priority,
		IdempotencyKey: o.idemKey,
		CallbackUrl:    o.callback,
		Context: &spearlet.ExecutionContext{
			ExecutionId: o.execID,
			Environment: env,
			TimeoutMs:   o.timeoutMs,
			MaxRetries:  o.retries,
		},
	}
	if req.Parameters, err = a.inputParams(cmd, o); err != nil {
		return err
	}

	c, err := a.client()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	switch mode {
	case spearlet.ExecutionMode_EXECUTION_MODE_ASYNC:
		return a.invokeAsync(ctx, c, req, o.quiet)
	case spearlet.ExecutionMode_EXECUTION_MODE_STREAM:
		return a.invokeStream(ctx, c, req, a.executionDeadline(cmd, o.timeoutMs))
	default:
		return a.invokeSync(ctx, c, req, a.executionDeadline(cmd, o.timeoutMs))
	}
}

// check checks the flags invoke, pipe and graph run share, and returns
// the mode and environment they give.
func (o *invokeOpts) check() (spearlet.ExecutionMode, map[string]string, error) {
	mode, err := modeOf(o.mode)
	if err != nil {
		return 0, nil, err
	}
	if o.timeoutMs < 0 {
		return 0, nil, usageErrorf("--timeout-ms must not be negative")
	}
	if o.retries < 0 {
		return 0, nil, usageErrorf("--retries must not be negative")
	}
	env, err := parseKVs("env", o.env)
	if err != nil {
		return 0, nil, err
	}
	if o.callback != "" {
		if err := checkCallbackURL(o.callback); err != nil {
			return 0, nil, err
		}
	}
	return mode, env, nil
}

// checkCallbackURL checks that --callback-url is an absolute http(s) URL.
func checkCallbackURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return usageErrorf("--callback-url %q: %v", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageErrorf("--callback-url %q: want an absolute http:// or https:// URL", s)
	}
	return nil
}

// inputParams is --input as the request's one parameter (none without
// the flag).
func (a *invokeCommands) inputParams(cmd *cobra.Command, o *invokeOpts) ([]*spearlet.FunctionParameter, error) {
	if !cmd.Flags().Changed("input") {
		return nil, nil
	}
	in, err := a.readInput(o.input)
	if err != nil {
		return nil, err
	}
	return []*spearlet.FunctionParameter{{Name: "input", Value: spearlet.BytesAny(in)}}, nil
}

// readInput resolves --input: "@FILE", "-" (stdin) or literal text.
func (a *invokeCommands) readInput(v string) ([]byte, error) {
	switch {
	case v == "-":
		b, err := io.ReadAll(a.stdin)
		if err != nil {
			return nil, usageErrorf("reading stdin: %v", err)
		}
		return b, nil
	case strings.HasPrefix(v, "@"):
		b, err := os.ReadFile(v[1:])
		if err != nil {
			return nil, usageErrorf("--input: %v", err)
		}
		return b, nil
	default:
		return []byte(v), nil
	}
}

// executionDeadline is the RPC timeout of a sync or stream invocation.
func (a *invokeCommands) executionDeadline(cmd *cobra.Command, timeoutMs int64) time.Duration {
	if timeoutMs > 0 {
		return time.Duration(timeoutMs)*time.Millisecond + invokeMargin
	}
	if cmd.Flags().Changed("timeout") {
		return a.timeout
	}
	return 0
}

func (a *invokeCommands) invokeSync(ctx context.Context, c spearlet.FunctionServiceClient, req *spearlet.InvokeFunctionRequest, timeout time.Duration) error {
	resp, err := call(ctx, timeout, c.InvokeFunction, req)
	if err != nil {
		return err
	}
	return a.answered(ctx, resp)
}

// answered reports a sync invocation's (or graph's) answer: its output
// and outcome.
func (a *invokeCommands) answered(ctx context.Context, resp *spearlet.InvokeFunctionResponse) error {
	if a.json {
		if err := a.printJSON(resp); err != nil {
			return err
		}
	}
	res := resp.GetResult()
	if _, terminal := outcome(res.GetStatus()); terminal {
		return a.finishExecution(ctx, resp.GetExecutionId(), res)
	}
	if !resp.GetSuccess() {
		return a.rejected(resp)
	}
	return failf("execution %s is %s, not finished; follow it with: spear exec wait %s",
		resp.GetExecutionId(), statusName(res.GetStatus()), resp.GetExecutionId())
}

// rejected reports an invocation the node did not accept.
func (a *invokeCommands) rejected(resp *spearlet.InvokeFunctionResponse) error {
	m := cmp.Or(resp.GetResult().GetErrorMessage(), resp.GetMessage())
	return &cliError{class: errdefs.FailedPrecondition, code: resp.GetResult().GetErrorCode(), msg: "invocation rejected" + suffix(m)}
}

func (a *invokeCommands) invokeAsync(ctx context.Context, c spearlet.FunctionServiceClient, req *spearlet.InvokeFunctionRequest, quiet bool) error {
	resp, err := call(ctx, a.timeout, c.InvokeFunction, req)
	if err != nil {
		return err
	}
	return a.accepted(resp, quiet)
}

// accepted reports an async invocation's (or graph's) acceptance.
func (a *invokeCommands) accepted(resp *spearlet.InvokeFunctionResponse, quiet bool) error {
	if a.json {
		if err := a.printJSON(resp); err != nil {
			return err
		}
	}
	if !resp.GetSuccess() {
		return a.rejected(resp)
	}
	if a.json {
		return nil
	}
	if quiet || !a.isTerminal(a.stdout) {
		fmt.Fprintln(a.stdout, resp.GetExecutionId())
		return nil
	}
	var kv kvList
	kv.add("execution id", resp.GetExecutionId())
	kv.add("task id", resp.GetTaskId())
	kv.add("status", statusName(resp.GetResult().GetStatus()))
	kv.add("status endpoint", resp.GetStatusEndpoint())
	kv.add("estimated completion", fmtMillis(resp.GetEstimatedCompletionMs()))
	kv.add("follow it with", "spear exec wait "+resp.GetExecutionId())
	kv.print(a.stdout)
	return nil
}

func (a *invokeCommands) invokeStream(ctx context.Context, c spearlet.FunctionServiceClient, req *spearlet.InvokeFunctionRequest, timeout time.Duration) error {
	var cancel context.CancelFunc
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	defer cancel()
	stream, err := c.StreamFunction(ctx, req)
	if err != nil {
		return newRPCError(err, nil)
	}
	return a.followStream(stream)
}

// followStream writes a stream's chunks as they arrive and reports its
// outcome.
func (a *invokeCommands) followStream(stream grpc.ServerStreamingClient[spearlet.StreamExecutionResult]) error {
	var final *spearlet.StreamExecutionResult
	err := a.writeRaw(func(w io.Writer) (err error) {
		final, err = a.readStream(stream, w)
		return err
	})
	if err != nil {
		return err
	}
	return a.ended(final.GetExecutionId(), final.GetStatus(), final.GetErrorCode(), final.GetErrorMessage())
}

// readStream writes chunks to w as they arrive and returns the final
// message.
func (a *invokeCommands) readStream(stream grpc.ServerStreamingClient[spearlet.StreamExecutionResult], w io.Writer) (*spearlet.StreamExecutionResult, error) {
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil, failf("stream ended without a final status")
		}
		if err != nil {
			return nil, newRPCError(err, stream.Trailer())
		}
		if a.json {
			if err := a.printJSON(msg); err != nil {
				return nil, err
			}
		} else {
			out, err := spearlet.AnyBytes(msg.GetChunkData())
			if err != nil {
				return nil, err
			}
			if err := writeFlush(w, out); err != nil {
				return nil, err
			}
		}
		if msg.GetIsFinal() {
			return msg, nil
		}
	}
}

// fmtElapsed formats an elapsed time for progress lines.
func fmtElapsed(d time.Duration) string {
	return fmt.Sprintf("%.1fs", d.Seconds())
}
