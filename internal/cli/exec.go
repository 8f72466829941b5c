package cli

import (
	"cmp"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spear-go/spear/api/spearlet"
)

const statusNames = "pending, running, completed, failed, cancelled or timeout"

func (a *execCommands) newExecCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "exec",
		Short: "Inspect, list, cancel, wait for and requeue executions",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(a.newExecGetCmd(), a.newExecListCmd(), a.newExecCancelCmd(), a.newExecWaitCmd(),
		a.newExecRequeueCmd(), a.newExecLogsCmd(), a.newExecOutputCmd())
	return cmd
}

func (a *execCommands) newExecGetCmd() *cobra.Command {
	var logs bool
	cmd := &cobra.Command{
		Use:   "get ID",
		Short: "Show an execution's status and result",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), a.timeout, c.GetExecutionStatus, &spearlet.GetExecutionStatusRequest{
				ExecutionId:   args[0],
				IncludeResult: true,
				IncludeLogs:   logs,
			})
			if err != nil {
				return err
			}
			if human, err := a.answer(resp, resp.GetFound(), executionNotFound(args[0], resp.GetMessage())); !human {
				return err
			}
			return a.printExecution(cmd.Context(), args[0], resp)
		},
	}
	cmd.Flags().BoolVar(&logs, "logs", false, "include the execution's logs")
	return cmd
}

func (a *execCommands) printExecution(ctx context.Context, id string, resp *spearlet.GetExecutionStatusResponse) error {
	res := resp.GetResult()
	var kv kvList
	kv.add("execution id", id)
	kv.add("status", statusName(res.GetStatus()))
	kv.add("error code", res.GetErrorCode())
	kv.add("error", res.GetErrorMessage())
	if _, terminal := outcome(res.GetStatus()); terminal && res.GetStatus() != spearlet.ExecutionStatus_EXECUTION_STATUS_CANCELLED {
		kv.add("exit code", strconv.Itoa(int(res.GetExitCode())))
	}
	if res.GetAttempts() > 0 {
		kv.add("attempts", strconv.Itoa(int(res.GetAttempts())))
	}
	if res.GetDeadLettered() {
		kv.add("dead-lettered", "yes (retries exhausted; run it again with: spear exec requeue "+id+")")
	}
	kv.add("started", fmtTimestamp(res.GetStartedAt()))
	kv.add("completed", fmtTimestamp(res.GetCompletedAt()))
	kv.add("duration", fmtMillis(res.GetExecutionTimeMs()))
	kv.add("memory", fmtBytes(res.GetMemoryUsedBytes()))
	kv.add("metrics", fmtMap(res.GetMetrics()))
	if cb := res.GetCallback(); cb != nil {
		addCallback(&kv, cb)
	}
	out, err := spearlet.AnyBytes(res.GetResult())
	if err != nil {
		return err
	}
	binary := len(out) > 0 && !utf8.Valid(out)
	if binary {
		kv.add("output", fmt.Sprintf("%d bytes (binary; write it with: spear exec output %s > FILE)", max(int64(len(out)), res.GetOutputSize()), id))
	} else if res.GetOutputPartial() {
		kv.add("output size", fmtBytes(res.GetOutputSize()))
	}
	kv.print(a.stdout)
	if h := res.GetAttemptHistory(); len(h) > 0 {
		if err := a.printAttempts(h); err != nil {
			return err
		}
	}
	if steps := resp.GetSteps(); len(steps) > 0 {
		if err := a.printSteps(steps); err != nil {
			return err
		}
	}
	if len(out) > 0 && !binary {
		fmt.Fprintln(a.stdout, "output:")
		iw := newIndentWriter(a.stdout)
		if err := a.writeOutput(ctx, id, res, iw); err != nil {
			return err
		}
		if err := iw.end(); err != nil {
			return err
		}
	}
	if len(resp.GetLogs()) > 0 {
		fmt.Fprintln(a.stdout, "logs:")
		for _, l := range resp.GetLogs() {
			printIndented(a.app, l)
		}
	}
	return nil
}

// addCallback adds a completion callback's delivery to kv.
func addCallback(kv *kvList, cb *spearlet.CallbackDelivery) {
	state := cb.GetState()
	if state == "" {
		state = "unknown"
	}
	var details []string
	if n := cb.GetAttempts(); n > 0 {
		details = append(details, fmt.Sprintf("%d attempt%s", n, plural(n)))
	}
	if c := cb.GetLastStatusCode(); c != 0 {
		details = append(details, fmt.Sprintf("HTTP %d", c))
	}
	if len(details) > 0 {
		state += " (" + strings.Join(details, ", ") + ")"
	}
	kv.add("callback", state)
	kv.add("callback url", cb.GetUrl())
	kv.add("callback error", cb.GetLastError())
	kv.add("callback delivered", fmtTimestamp(cb.GetDeliveredAt()))
}

// fmtDuration rounds d for display: to milliseconds from 1ms up, else to
// microseconds.
func fmtDuration(d time.Duration) string {
	if d >= time.Millisecond || d <= -time.Millisecond {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Microsecond).String()
}

func plural(n int32) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// printAttempts prints an execution's attempt history as an indented
// table.
func (a *execCommands) printAttempts(h []*spearlet.AttemptInfo) error {
	fmt.Fprintln(a.stdout, "attempt history:")
	tw := newTable(a.stdout)
	row(tw, "  #", "STATUS", "STARTED", "DURATION", "NODE", "ERROR")
	for _, at := range h {
		dur := ""
		if s, c := at.GetStartedAt(), at.GetCompletedAt(); fmtTimestamp(s) != "" && fmtTimestamp(c) != "" {
			dur = fmtDuration(c.AsTime().Sub(s.AsTime()))
		}
		errText := at.GetErrorCode()
		if m := at.GetErrorMessage(); m != "" {
			if errText != "" {
				errText += ": "
			}
			errText += truncate(m, 60)
		}
		row(tw, "  "+strconv.Itoa(int(at.GetAttempt())), statusName(at.GetStatus()), orDash(fmtTimestamp(at.GetStartedAt())),
			orDash(dur), orDash(at.GetNode()), orDash(errText))
	}
	return tw.Flush()
}

// printSteps prints a graph's steps.
func (a *execCommands) printSteps(steps []*spearlet.StepInfo) error {
	fmt.Fprintln(a.stdout, "steps:")
	tw := newTable(a.stdout)
	row(tw, "  STEP", "TASK", "STATUS", "ATTEMPTS", "EXECUTION ID", "ERROR")
	for _, s := range steps {
		status := "not started"
		if s.GetStatus() != spearlet.ExecutionStatus_EXECUTION_STATUS_UNKNOWN {
			status = statusName(s.GetStatus())
		}
		row(tw, "  "+s.GetStepId(), s.GetTaskId(), status, strconv.Itoa(int(s.GetAttempts())),
			orDash(s.GetExecutionId()), orDash(truncate(strings.TrimSpace(s.GetErrorCode()+" "+s.GetErrorMessage()), 60)))
	}
	return tw.Flush()
}

func printIndented(a *app, s string) {
	for _, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		fmt.Fprintln(a.stdout, "  "+line)
	}
}

type execListOpts struct {
	task, status string
	limit        int32
	all, dead    bool
	parent       string
}

func (a *execCommands) newExecListCmd() *cobra.Command {
	var o execListOpts
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List executions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.execList(cmd, &o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.task, "task", "", "only executions of this task")
	f.StringVar(&o.status, "status", "", "only executions with this status: "+statusNames)
	f.Int32Var(&o.limit, "limit", 0, "maximum executions per page (0: node default)")
	f.BoolVar(&o.all, "all", false, "follow pagination and list every execution")
	f.BoolVar(&o.dead, "dead-letter", false, "only dead-lettered executions (retries exhausted; see spear exec requeue)")
	f.StringVar(&o.parent, "parent", "", "only the steps of this graph, in the graph's order")
	return cmd
}

func (a *execCommands) execList(cmd *cobra.Command, o *execListOpts) error {
	req := &spearlet.ListExecutionsRequest{TaskId: o.task, Limit: o.limit, DeadLetteredOnly: o.dead, ParentId: o.parent}
	if o.status != "" {
		s, ok := parseStatus(o.status)
		if !ok {
			return usageErrorf("--status %q: want %s", o.status, statusNames)
		}
		req.StatusFilter = s
	}
	if o.limit < 0 {
		return usageErrorf("--limit must not be negative")
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	all := &spearlet.ListExecutionsResponse{}
	seen := map[string]bool{}
	for {
		resp, err := call(cmd.Context(), a.timeout, c.ListExecutions, req)
		if err != nil {
			return err
		}
		all.Executions = append(all.Executions, resp.GetExecutions()...)
		all.HasMore, all.NextStartAfter = resp.GetHasMore(), resp.GetNextStartAfter()
		if !o.all || !resp.GetHasMore() {
			break
		}
		next := resp.GetNextStartAfter()
		if next == "" || seen[next] {
			return failf("node reported more executions but no new next_start_after (%q)", next)
		}
		seen[next] = true
		req.StartAfter = next
	}
	if a.json {
		return a.printJSON(all)
	}
	if err := a.printExecutions(all.GetExecutions()); err != nil {
		return err
	}
	if all.GetHasMore() {
		fmt.Fprintf(a.stderr, "more executions after %q; use --all to list them\n", all.GetNextStartAfter())
	}
	return nil
}

// printExecutions prints an execution table.
func (a *app) printExecutions(execs []*spearlet.ExecutionInfo) error {
	tw := newTable(a.stdout)
	row(tw, "EXECUTION ID", "TASK", "FUNCTION", "MODE", "STATUS", "DEAD", "CREATED", "DURATION", "ERROR")
	for _, e := range execs {
		created := fmtTimestamp(e.GetCreatedAt())
		if created == "" {
			created = fmtTimestamp(e.GetStartedAt())
		}
		errText := e.GetErrorCode()
		if errText == "" {
			errText = truncate(e.GetErrorMessage(), 40)
		}
		dead := "-"
		if e.GetDeadLettered() {
			dead = "yes"
		}
		row(tw, e.GetExecutionId(), orDash(e.GetTaskId()), orDash(e.GetFunctionName()), modeName(e.GetExecutionMode()),
			statusName(e.GetStatus()), dead, orDash(created), orDash(fmtMillis(e.GetExecutionTimeMs())), orDash(errText))
	}
	return tw.Flush()
}

func (a *execCommands) newExecCancelCmd() *cobra.Command {
	var reason string
	var force bool
	cmd := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a queued or running execution",
		Long: `Cancel a queued or running execution. Exits 1 when the node did not cancel
it (it had finished already).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), a.timeout, c.CancelExecution, &spearlet.CancelExecutionRequest{
				ExecutionId: args[0],
				Reason:      reason,
				Force:       force,
			})
			if err != nil {
				return err
			}
			if a.json {
				if err := a.printJSON(resp); err != nil {
					return err
				}
			}
			if !resp.GetSuccess() {
				return failf("execution %s not cancelled%s", args[0], suffix(resp.GetMessage()))
			}
			if !a.json {
				fmt.Fprintln(a.stdout, cancelledLine(args[0], resp))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "reason recorded with the cancellation")
	cmd.Flags().BoolVar(&force, "force", false, "kill the function immediately instead of stopping it gracefully")
	return cmd
}

func (a *execCommands) newExecRequeueCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "requeue ID",
		Short: "Run a dead-lettered execution again",
		Long: `Queue a dead-lettered execution (one whose retries ran out) again, with a
fresh retry budget, and print its new status. Follow it with
"spear exec wait ID".

Exits 1 when the node did not requeue it (a node refuses an execution that
is not dead-lettered with NOT_DEAD_LETTERED).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), a.timeout, c.RequeueExecution,
				&spearlet.RequeueExecutionRequest{ExecutionId: args[0]})
			if err != nil {
				return err
			}
			if human, err := a.answer(resp, resp.GetSuccess(), failf("execution %s not requeued%s", args[0], suffix(resp.GetMessage()))); !human {
				return err
			}
			id := args[0]
			if n := resp.GetExecutionId(); n != "" && n != id {
				id += " as " + n
			}
			fmt.Fprintf(a.stdout, "requeued execution %s (%s); follow it with: spear exec wait %s\n", id, statusName(resp.GetStatus()),
				cmp.Or(resp.GetExecutionId(), args[0]))
			return nil
		},
	}
}

// watchWait follows an execution with WatchExecution. done is false when
// the node does not have the method (the caller then polls).
func (a *execCommands) watchWait(ctx context.Context, c spearlet.FunctionServiceClient, id string) (done bool, err error) {
	stream, err := c.WatchExecution(ctx, &spearlet.WatchExecutionRequest{ExecutionId: id, IncludeResult: true})
	if err != nil {
		if status.Code(err) == codes.Unimplemented {
			return false, nil
		}
		return true, newRPCError(err, nil)
	}
	start := time.Now()
	for {
		ev, err := stream.Recv()
		if err != nil {
			if status.Code(err) == codes.Unimplemented {
				return false, nil
			}
			if ctx.Err() != nil {
				return true, ctx.Err()
			}
			return true, newRPCError(err, stream.Trailer())
		}
		fmt.Fprintf(a.stderr, "%s: %s (%s)\n", id, statusName(ev.GetStatus()), fmtElapsed(time.Since(start)))
		if _, terminal := outcome(ev.GetStatus()); terminal {
			if a.json {
				if err := a.printJSON(&spearlet.GetExecutionStatusResponse{Found: true, Result: ev.GetResult()}); err != nil {
					return true, err
				}
			}
			return true, a.finishExecution(ctx, id, ev.GetResult())
		}
	}
}

func (a *execCommands) newExecLogsCmd() *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs ID",
		Short: "Print an execution's standard error, timestamped; --follow until it ends",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			printed := 0
			for {
				resp, err := call(ctx, a.timeout, c.GetExecutionStatus, &spearlet.GetExecutionStatusRequest{
					ExecutionId: args[0], IncludeLogs: true,
				})
				if err != nil {
					return err
				}
				if !resp.GetFound() {
					return executionNotFound(args[0], resp.GetMessage())
				}
				lines := resp.GetLogs()
				if printed > len(lines) { // older lines were dropped (the log is bounded)
					printed = 0
				}
				for _, l := range lines[printed:] {
					fmt.Fprintln(a.stdout, l)
				}
				printed = len(lines)
				if _, terminal := outcome(resp.GetResult().GetStatus()); !follow || terminal {
					return nil
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(250 * time.Millisecond):
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines until the execution ends")
	return cmd
}

func (a *execCommands) newExecWaitCmd() *cobra.Command {
	var poll time.Duration
	cmd := &cobra.Command{
		Use:   "wait ID",
		Short: "Wait for an execution to finish and print its output",
		Long: `Follow an execution (WatchExecution) until it reaches a terminal status,
showing each status change on stderr, then print its output (raw, or the
status response with --json). Against a node without WatchExecution it polls.

` + exitCodesHelp(),
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if poll <= 0 {
				return usageErrorf("--poll must be positive")
			}
			return a.execWait(cmd, args[0], poll)
		},
	}
	cmd.Flags().DurationVar(&poll, "poll", 100*time.Millisecond, "polling interval")
	return cmd
}

func (a *execCommands) execWait(cmd *cobra.Command, id string, poll time.Duration) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	if done, err := a.watchWait(ctx, c, id); done || err != nil {
		return err
	}
	tty := a.isTerminal(a.stderr)
	spinner := []rune(`|/-\`)
	start := time.Now()
	last := spearlet.ExecutionStatus(-1)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			if tty {
				fmt.Fprint(a.stderr, "\r\033[K")
			}
			return ctx.Err()
		case <-timer.C:
		}
		resp, err := call(ctx, a.timeout, c.GetExecutionStatus, &spearlet.GetExecutionStatusRequest{
			ExecutionId:   id,
			IncludeResult: true,
		})
		if tty {
			fmt.Fprint(a.stderr, "\r\033[K")
		}
		if err != nil {
			return err
		}
		if !resp.GetFound() {
			return executionNotFound(id, resp.GetMessage())
		}
		res := resp.GetResult()
		st := res.GetStatus()
		elapsed := fmtElapsed(time.Since(start))
		_, terminal := outcome(st)
		if st != last {
			fmt.Fprintf(a.stderr, "%s: %s (%s)\n", id, statusName(st), elapsed)
			last = st
		}
		if terminal {
			if a.json {
				if err := a.printJSON(resp); err != nil {
					return err
				}
			}
			return a.finishExecution(ctx, id, res)
		}
		if tty {
			fmt.Fprintf(a.stderr, "%c %s %s", spinner[i%len(spinner)], statusName(st), elapsed)
		}
		timer.Reset(poll)
	}
}

// cancelledLine is what exec cancel prints when the node cancelled the
// execution (or is stopping it).
func cancelledLine(id string, resp *spearlet.CancelExecutionResponse) string {
	if resp.GetFinalStatus() == spearlet.ExecutionStatus_EXECUTION_STATUS_CANCELLED {
		return "cancelled execution " + id
	}
	return fmt.Sprintf("execution %s: %s", id, cmp.Or(resp.GetMessage(), "cancel requested; status "+statusName(resp.GetFinalStatus())))
}
