package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/spear-go/spear/api/spearlet"
)

func (a *taskCommands) newTaskCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "task",
		Short: "Register, list, inspect, update and delete tasks",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(a.newTaskCreateCmd(), a.newTaskListCmd(), a.newTaskGetCmd(), a.newTaskLimitsCmd(), a.newTaskUpdateCmd(),
		a.newTaskDeleteCmd())
	return cmd
}

type taskCreateOpts struct {
	id, description string
	artifact        artifactOpts
	meta            []string
	limits          limitOpts
}

func (a *taskCommands) newTaskCreateCmd() *cobra.Command {
	var o taskCreateOpts
	cmd := &cobra.Command{
		Use:     "create NAME (--location PATH | --upload PATH)",
		Aliases: []string{"register"},
		Short:   "Register a task",
		Long: `Register a task named NAME.

--location names an artifact the node can reach (a path, file:// URI, image
reference or uploaded artifact id); a relative path is made absolute. A path
must lie inside one of the node's --artifact-root directories (else
ARTIFACT_OUTSIDE_ROOT); --upload works whatever the roots.
--upload reads a local file, uploads it to the node with its sha256 checksum
and registers the task with the location the node returns.

--type defaults to "wasm" when the artifact ends in .wasm, else "process".

A task of a local file is pinned to the file's content: once the file
changes, invocations are refused (ARTIFACT_CHANGED) until "spear task
update" re-pins the task.

The limit flags (--max-concurrency, --max-queued, --memory-limit,
--default-timeout, --max-timeout, --pids-limit, --network) set the task's
quotas; change them later with "spear task limits". --network host lets
the task's process functions use the host's network instead of the
sandbox's loopback-only one.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.taskCreate(cmd, args[0], &o)
		},
	}
	f := cmd.Flags()
	o.artifact.register(cmd, "artifact type: process, wasm or docker (default from the file name)")
	f.StringVar(&o.description, "description", "", "task description")
	f.StringVar(&o.id, "id", "", "task id (default: derived by the node from NAME)")
	f.StringArrayVar(&o.meta, "meta", nil, "task metadata KEY=VALUE (repeatable)")
	o.limits.register(f)
	cmd.MarkFlagsOneRequired("location", "upload")
	return cmd
}

func (a *taskCommands) taskCreate(cmd *cobra.Command, name string, o *taskCreateOpts) error {
	meta, err := parseKVs("meta", o.meta)
	if err != nil {
		return err
	}
	if o.artifact.typ == "" {
		o.artifact.typ = "process"
		if strings.HasSuffix(strings.ToLower(o.artifact.source()), ".wasm") {
			o.artifact.typ = "wasm"
		}
	}
	if err := o.artifact.check(); err != nil {
		return err
	}
	limits := &spearlet.TaskLimits{}
	hasLimits, err := o.limits.apply(cmd.Flags(), limits)
	if err != nil {
		return err
	}
	if !hasLimits {
		limits = nil
	}

	c, err := a.client()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	spec, err := a.artifactSpec(ctx, c, &o.artifact)
	if err != nil {
		return err
	}
	resp, err := call(ctx, a.timeout, c.RegisterTask, &spearlet.RegisterTaskRequest{
		TaskId:          o.id,
		TaskName:        name,
		TaskDescription: o.description,
		ArtifactSpec:    spec,
		Metadata:        meta,
		Limits:          limits,
	})
	if err != nil {
		return err
	}
	msg := "registered task %s"
	if !resp.GetCreated() {
		msg = "task %s already registered (unchanged)"
	}
	return a.printTaskAnswer(resp, resp.GetTask(), msg)
}

func (a *taskCommands) newTaskUpdateCmd() *cobra.Command {
	var o artifactOpts
	cmd := &cobra.Command{
		Use:   "update ID [--location PATH | --upload PATH]",
		Short: "Re-pin a task to its artifact's content as it is now",
		Long: `Re-pin task ID to an artifact's current content: after its file changed
(invocations answer ARTIFACT_CHANGED until then), or to another location
(--location) or a local file uploaded now (--upload). Without either, the
task's own location is read again. --type, --checksum and --version, when
given, replace the task's; --checksum must match the content.

The node releases what its runtime held for the previous content (a
compiled WASM module).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.taskUpdate(cmd, args[0], &o)
		},
	}
	o.register(cmd, "artifact type: process, wasm or docker (default: the task's)")
	return cmd
}

func (a *taskCommands) taskUpdate(cmd *cobra.Command, id string, o *artifactOpts) error {
	if err := o.check(); err != nil {
		return err
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	spec, err := a.artifactSpec(ctx, c, o)
	if err != nil {
		return err
	}
	resp, err := call(ctx, a.timeout, c.UpdateTask, &spearlet.UpdateTaskRequest{TaskId: id, ArtifactSpec: spec})
	if err != nil {
		return err
	}
	msg := "updated task %s"
	if !resp.GetChanged() {
		msg = "task %s unchanged (already pinned to this content)"
	}
	return a.printTaskAnswer(resp, resp.GetTask(), msg)
}

// printTaskAnswer prints a node's answer about task t: as JSON with
// --json, else the line format (with t's id) and the task.
func (a *taskCommands) printTaskAnswer(resp proto.Message, t *spearlet.TaskInfo, format string) error {
	if a.json {
		return a.printJSON(resp)
	}
	fmt.Fprintf(a.stdout, format+"\n", t.GetTaskId())
	a.printTask(t)
	return nil
}

// artifactOpts are the flags that name a task's artifact, shared by
// "task create" and "task update".
type artifactOpts struct {
	location, upload, typ, checksum, version string
	meta                                     []string
}

// register adds the artifact flags to cmd; --location and --upload
// exclude each other.
func (o *artifactOpts) register(cmd *cobra.Command, typeUsage string) {
	f := cmd.Flags()
	f.StringVar(&o.location, "location", "", "artifact location (path, file:// URI, image reference, artifact id)")
	f.StringVar(&o.upload, "upload", "", "local artifact file to upload")
	f.StringVar(&o.typ, "type", "", typeUsage)
	f.StringVar(&o.checksum, "checksum", "", "expected artifact checksum, sha256:<hex>")
	f.StringVar(&o.version, "version", "", "artifact version")
	f.StringArrayVar(&o.meta, "artifact-meta", nil, "artifact metadata KEY=VALUE, the runtime's options (repeatable): process prestart=false; docker network, user, writable_rootfs, pids_limit")
	cmd.MarkFlagsMutuallyExclusive("location", "upload")
}

// source is the file or location the flags name.
func (o *artifactOpts) source() string {
	if o.upload != "" {
		return o.upload
	}
	return o.location
}

// check validates the flags before any RPC.
func (o *artifactOpts) check() error {
	switch o.typ {
	case "", "process", "wasm", "docker":
	default:
		return usageErrorf("--type %q: want process, wasm or docker", o.typ)
	}
	if o.checksum != "" && !strings.HasPrefix(o.checksum, "sha256:") {
		return usageErrorf("--checksum %q: want sha256:<hex>", o.checksum)
	}
	return nil
}

// artifactSpec is the artifact the flags name; --upload uploads the file
// first and names the location the node returns.
func (a *taskCommands) artifactSpec(ctx context.Context, c spearlet.FunctionServiceClient, o *artifactOpts) (*spearlet.ArtifactSpec, error) {
	meta, err := parseKVs("artifact-meta", o.meta)
	if err != nil {
		return nil, err
	}
	spec := &spearlet.ArtifactSpec{ArtifactType: o.typ, Version: o.version, Checksum: o.checksum, Metadata: meta}
	if o.upload == "" {
		if o.location != "" {
			loc, err := absLocation(o.location, o.typ)
			if err != nil {
				return nil, err
			}
			spec.Location = loc
		}
		return spec, nil
	}
	content, err := os.ReadFile(o.upload)
	if err != nil {
		return nil, usageErrorf("--upload: %v", err)
	}
	sum := sha256.Sum256(content)
	checksum := "sha256:" + hex.EncodeToString(sum[:])
	if o.checksum != "" && !strings.EqualFold(o.checksum, checksum) {
		return nil, usageErrorf("--checksum %s does not match %s (%s)", o.checksum, o.upload, checksum)
	}
	up, err := call(ctx, a.timeout, c.UploadArtifact, &spearlet.UploadArtifactRequest{
		Name:     filepath.Base(o.upload),
		Content:  content,
		Checksum: checksum,
	})
	if err != nil {
		return nil, err
	}
	if up.GetLocation() == "" {
		return nil, failf("upload of %s: node returned no location", o.upload)
	}
	if !a.json {
		fmt.Fprintf(a.stderr, "uploaded %s (%d bytes, %s) as %s\n", o.upload, len(content), checksum, up.GetLocation())
	}
	spec.Location, spec.Checksum = up.GetLocation(), up.GetChecksum()
	if spec.Checksum == "" {
		spec.Checksum = checksum
	}
	return spec, nil
}

// absLocation makes a relative filesystem location absolute; URIs, uploaded
// artifact ids and docker image references are left alone.
func absLocation(loc, typ string) (string, error) {
	if typ == "docker" || strings.Contains(loc, "://") || strings.HasPrefix(loc, "artifact:") || filepath.IsAbs(loc) {
		return loc, nil
	}
	abs, err := filepath.Abs(loc)
	if err != nil {
		return "", usageErrorf("--location %q: %v", loc, err)
	}
	return abs, nil
}

func (a *taskCommands) printTask(t *spearlet.TaskInfo) {
	var kv kvList
	spec := t.GetArtifactSpec()
	kv.add("task id", t.GetTaskId())
	kv.add("name", t.GetTaskName())
	kv.add("description", t.GetDescription())
	kv.add("type", spec.GetArtifactType())
	kv.add("location", spec.GetLocation())
	kv.add("version", spec.GetVersion())
	kv.add("checksum", spec.GetChecksum())
	kv.add("created", fmtUnixMillis(t.GetCreatedAt()))
	kv.add("updated", fmtUnixMillis(t.GetUpdatedAt()))
	kv.add("executions", strconv.Itoa(int(t.GetExecutionCount())))
	if t.GetLastStatus() != spearlet.ExecutionStatus_EXECUTION_STATUS_UNKNOWN {
		kv.add("last status", statusName(t.GetLastStatus()))
	}
	kv.add("metadata", fmtMap(t.GetMetadata()))
	addLimits(&kv, t.GetLimits(), false)
	kv.print(a.stdout)
}

type taskListOpts struct {
	prefix string
	limit  int32
	all    bool
}

func (a *taskCommands) newTaskListCmd() *cobra.Command {
	var o taskListOpts
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List tasks",
		Long: `List tasks. Without --all, one page of at most --limit tasks is shown;
with --all, pages (of --limit tasks) are followed until the end.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.taskList(cmd, &o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.prefix, "prefix", "", "only tasks whose id starts with this prefix")
	f.Int32Var(&o.limit, "limit", 0, "maximum tasks per page (0: node default)")
	f.BoolVar(&o.all, "all", false, "follow pagination and list every task")
	return cmd
}

func (a *taskCommands) taskList(cmd *cobra.Command, o *taskListOpts) error {
	if o.limit < 0 {
		return usageErrorf("--limit must not be negative")
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	all := &spearlet.ListTasksResponse{}
	req := &spearlet.ListTasksRequest{Prefix: o.prefix, Limit: o.limit, IncludeDetails: true}
	seen := map[string]bool{}
	for {
		resp, err := call(cmd.Context(), a.timeout, c.ListTasks, req)
		if err != nil {
			return err
		}
		all.Tasks = append(all.Tasks, resp.GetTasks()...)
		all.HasMore, all.NextStartAfter = resp.GetHasMore(), resp.GetNextStartAfter()
		if !o.all || !resp.GetHasMore() {
			break
		}
		next := resp.GetNextStartAfter()
		if next == "" || seen[next] {
			return failf("node reported more tasks but no new next_start_after (%q)", next)
		}
		seen[next] = true
		req.StartAfter = next
	}
	if a.json {
		return a.printJSON(all)
	}
	tw := newTable(a.stdout)
	row(tw, "TASK ID", "NAME", "TYPE", "EXECUTIONS", "LAST STATUS", "CREATED")
	for _, t := range all.GetTasks() {
		last := ""
		if t.GetLastStatus() != spearlet.ExecutionStatus_EXECUTION_STATUS_UNKNOWN {
			last = statusName(t.GetLastStatus())
		}
		row(tw, t.GetTaskId(), orDash(t.GetTaskName()), orDash(t.GetArtifactSpec().GetArtifactType()),
			strconv.Itoa(int(t.GetExecutionCount())), orDash(last), orDash(fmtUnixMillis(t.GetCreatedAt())))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if all.GetHasMore() {
		fmt.Fprintf(a.stderr, "more tasks after %q; use --all to list them\n", all.GetNextStartAfter())
	}
	return nil
}

func (a *taskCommands) newTaskGetCmd() *cobra.Command {
	var executions int32
	cmd := &cobra.Command{
		Use:   "get ID",
		Short: "Show a task (and optionally its recent executions)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if executions < 0 {
				return usageErrorf("--executions must not be negative")
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), a.timeout, c.GetTask, &spearlet.GetTaskRequest{
				TaskId:            args[0],
				IncludeExecutions: executions > 0,
				ExecutionLimit:    executions,
			})
			if err != nil {
				return err
			}
			if human, err := a.answer(resp, resp.GetFound(), taskNotFound(args[0], resp.GetMessage())); !human {
				return err
			}
			a.printTask(resp.GetTask())
			if len(resp.GetExecutions()) > 0 {
				fmt.Fprintln(a.stdout)
				return a.printExecutions(resp.GetExecutions())
			}
			return nil
		},
	}
	cmd.Flags().Int32Var(&executions, "executions", 0, "also show up to N recent executions")
	return cmd
}

func (a *taskCommands) newTaskDeleteCmd() *cobra.Command {
	var force, cleanup bool
	cmd := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a task",
		Long:  "Delete a task. Exits 1 when the node did not delete it.",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), a.timeout, c.DeleteTask, &spearlet.DeleteTaskRequest{
				TaskId:            args[0],
				Force:             force,
				CleanupExecutions: cleanup,
			})
			if err != nil {
				return err
			}
			if human, err := a.answer(resp, resp.GetSuccess(), failf("task %s not deleted%s", args[0], suffix(resp.GetMessage()))); !human {
				return err
			}
			msg := "deleted task " + args[0]
			if !resp.GetDeleted() {
				msg = "task " + args[0] + " was not present"
			}
			if cleanup {
				msg += fmt.Sprintf(" (cleaned %d executions)", resp.GetCleanedExecutions())
			}
			fmt.Fprintln(a.stdout, msg)
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "delete even if the task has active executions")
	cmd.Flags().BoolVar(&cleanup, "cleanup", false, "also delete the task's execution records")
	return cmd
}

// suffix returns ": msg", or "" when msg is empty.
func suffix(msg string) string {
	if msg == "" {
		return ""
	}
	return ": " + msg
}
