package cli

import (
	"context"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/spear-go/spear/api/spearlet"
)

// graphCommands are pipe and graph: task graphs run as one execution.
type graphCommands struct{ *invokeCommands }

func (a *graphCommands) newPipeCmd() *cobra.Command {
	var o invokeOpts
	cmd := &cobra.Command{
		Use:   "pipe TASK TASK...",
		Short: "Run tasks as a pipeline: each one's output is the next one's input",
		Long: `Run the tasks as a chain, like a shell pipeline: the first gets --input,
each next one its predecessor's output; the last one's output is printed.
The chain is one graph execution (see "spear graph run"): one id, status,
cancel and wait, with each step a child execution ("spear exec list
--parent ID"). Each step's id is its task's name, suffixed -2, -3... when
a task appears again.

--mode, --input, --env, --priority, --idempotency-key, --callback-url and
--quiet are as for "spear invoke"; --timeout-ms bounds the whole chain,
--retries applies to each step.

` + exitCodesHelp(),
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &spearlet.InvokeGraphRequest{}
			seen := map[string]int{}
			prev := ""
			for _, t := range args {
				seen[t]++
				id := t
				if n := seen[t]; n > 1 {
					id = t + "-" + strconv.Itoa(n)
				}
				st := &spearlet.GraphStep{Id: id, TaskId: t, MaxRetries: o.retries}
				if prev != "" {
					st.DependsOn = []string{prev}
				}
				req.Steps, prev = append(req.Steps, st), id
			}
			return a.runGraph(cmd, req, &o)
		},
	}
	a.graphFlags(cmd, &o)
	cmd.Flags().Int32Var(&o.retries, "retries", 0, "maximum retries of each step")
	return cmd
}

func (a *graphCommands) newGraphCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "graph", Short: "Run graphs of tasks"}
	var o invokeOpts
	run := &cobra.Command{
		Use:   "run FILE",
		Short: "Run the graph of tasks a YAML or JSON file describes",
		Long: `Run a graph of tasks as one execution. FILE (YAML or JSON; "-" for stdin):

  steps:
    - id: a                # 1-64 of A-Z a-z 0-9 _ -
      task: upper
    - {id: b, task: rev, depends_on: [a]}
    - {id: c, task: wc, depends_on: [a], max_retries: 2, on_failure: continue}
    - {id: d, task: echo, depends_on: [b, c], timeout_ms: 5000, env: {K: V}}
  output: d                # default: the single step nothing depends on
  timeout_ms: 60000        # bounds the whole graph
  fail_fast: true          # cancel running steps once one fails (default)
  input: abc               # the graph's input (--input wins)

A root step gets the graph's input (or its own "input"); a step with one
parent gets the parent's output as it is; a step with several gets one
JSON object keyed by parent step id (see docs/GRAPHS.md). The graph's id
works with every "spear exec" command; "spear exec list --parent ID" lists
its steps.

` + exitCodesHelp(),
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, in, err := a.readGraphFile(args[0])
			if err != nil {
				return err
			}
			if in != nil && !cmd.Flags().Changed("input") {
				req.Parameters = []*spearlet.FunctionParameter{{Name: "input", Value: spearlet.BytesAny([]byte(*in))}}
			}
			return a.runGraph(cmd, req, &o)
		},
	}
	a.graphFlags(run, &o)
	cmd.AddCommand(run)
	return cmd
}

func (a *graphCommands) graphFlags(cmd *cobra.Command, o *invokeOpts) {
	f := cmd.Flags()
	f.StringVarP(&o.mode, "mode", "m", "sync", "execution mode: sync, async or stream")
	f.StringVarP(&o.input, "input", "i", "", `the graph's input: @FILE, "-" for stdin, or literal text`)
	f.Int64Var(&o.timeoutMs, "timeout-ms", 0, "timeout of the whole graph in milliseconds (0: none)")
	f.StringArrayVarP(&o.env, "env", "e", nil, "environment variable KEY=VALUE for every step (repeatable)")
	f.StringVar(&o.execID, "execution-id", "", "the graph's execution id")
	f.Int32Var(&o.priority, "priority", 0, "scheduling priority of every step (0: normal)")
	f.StringVar(&o.idemKey, "idempotency-key", "", "key that makes repeating this graph return the original execution")
	f.StringVar(&o.callback, "callback-url", "", "http(s) URL the node POSTs the graph's final record to")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "async: print only the execution id")
}

// graphFile is the file "spear graph run" reads.
type graphFile struct {
	Steps []struct {
		ID         string            `yaml:"id"`
		Task       string            `yaml:"task"`
		TaskID     string            `yaml:"task_id"`
		DependsOn  []string          `yaml:"depends_on"`
		Input      *string           `yaml:"input"`
		Env        map[string]string `yaml:"env"`
		TimeoutMs  int64             `yaml:"timeout_ms"`
		MaxRetries int32             `yaml:"max_retries"`
		OnFailure  string            `yaml:"on_failure"`
	} `yaml:"steps"`
	Output    string  `yaml:"output"`
	TimeoutMs int64   `yaml:"timeout_ms"`
	FailFast  *bool   `yaml:"fail_fast"`
	Input     *string `yaml:"input"`
}

// readGraphFile reads a graph file into a request, and the input it
// names (nil: none).
func (a *graphCommands) readGraphFile(path string) (*spearlet.InvokeGraphRequest, *string, error) {
	var b []byte
	var err error
	if path == "-" {
		b, err = a.readInput("-")
	} else if b, err = os.ReadFile(path); err != nil {
		err = usageErrorf("graph file: %v", err)
	}
	if err != nil {
		return nil, nil, err
	}
	var f graphFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		return nil, nil, usageErrorf("graph file %s: %v", path, err)
	}
	req := &spearlet.InvokeGraphRequest{Output: f.Output, TimeoutMs: f.TimeoutMs, FailFast: f.FailFast}
	for _, s := range f.Steps {
		st := &spearlet.GraphStep{Id: s.ID, TaskId: s.TaskID, DependsOn: s.DependsOn, Environment: s.Env,
			TimeoutMs: s.TimeoutMs, MaxRetries: s.MaxRetries}
		if s.Task != "" {
			st.TaskId = s.Task
		}
		switch s.OnFailure {
		case "", "fail", "FAIL":
		case "continue", "CONTINUE":
			st.OnFailure = spearlet.OnFailure_ON_FAILURE_CONTINUE
		default:
			return nil, nil, usageErrorf("graph file %s: step %q: on_failure %q: want fail or continue", path, s.ID, s.OnFailure)
		}
		if s.Input != nil {
			st.Parameters = []*spearlet.FunctionParameter{{Name: "input", Value: spearlet.BytesAny([]byte(*s.Input))}}
		}
		req.Steps = append(req.Steps, st)
	}
	return req, f.Input, nil
}

// runGraph fills the request's common fields from the flags and runs the
// graph in the mode asked.
func (a *graphCommands) runGraph(cmd *cobra.Command, req *spearlet.InvokeGraphRequest, o *invokeOpts) error {
	mode, env, err := o.check()
	if err != nil {
		return err
	}
	req.ExecutionMode, req.Priority, req.IdempotencyKey, req.CallbackUrl = mode, o.priority, o.idemKey, o.callback
	if o.timeoutMs > 0 {
		req.TimeoutMs = o.timeoutMs
	}
	req.Context = &spearlet.ExecutionContext{ExecutionId: o.execID, Environment: env}
	if cmd.Flags().Changed("input") {
		if req.Parameters, err = a.inputParams(cmd, o); err != nil {
			return err
		}
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	return a.sendGraph(cmd.Context(), c, req, o.quiet, a.executionDeadline(cmd, req.TimeoutMs))
}

func (a *graphCommands) sendGraph(ctx context.Context, c spearlet.FunctionServiceClient, req *spearlet.InvokeGraphRequest, quiet bool, deadline time.Duration) error {
	switch req.ExecutionMode {
	case spearlet.ExecutionMode_EXECUTION_MODE_ASYNC:
		resp, err := call(ctx, a.timeout, c.InvokeGraph, req)
		if err != nil {
			return err
		}
		return a.accepted(resp, quiet)
	case spearlet.ExecutionMode_EXECUTION_MODE_STREAM:
		if deadline > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, deadline)
			defer cancel()
		}
		stream, err := c.StreamGraph(ctx, req)
		if err != nil {
			return newRPCError(err, nil)
		}
		return a.followStream(stream)
	}
	resp, err := call(ctx, deadline, c.InvokeGraph, req)
	if err != nil {
		return err
	}
	return a.answered(ctx, resp)
}

// modeOf parses --mode.
func modeOf(s string) (spearlet.ExecutionMode, error) {
	switch s {
	case "sync":
		return spearlet.ExecutionMode_EXECUTION_MODE_SYNC, nil
	case "async":
		return spearlet.ExecutionMode_EXECUTION_MODE_ASYNC, nil
	case "stream":
		return spearlet.ExecutionMode_EXECUTION_MODE_STREAM, nil
	}
	return 0, usageErrorf("--mode %q: want sync, async or stream", s)
}
