package cli

import (
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/errdefs"
)

func (a *nodeCommands) newHealthCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "health",
		Short: "Show the node's health",
		Long:  "Show the node's health with details. Exits 1 when the node reports itself unhealthy.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), a.timeout, c.GetHealth, &spearlet.GetHealthRequest{IncludeDetails: true})
			if err != nil {
				return err
			}
			if a.json {
				if err := a.printJSON(resp); err != nil {
					return err
				}
			} else {
				var kv kvList
				kv.add("status", resp.GetStatus())
				kv.add("message", resp.GetMessage())
				kv.add("uptime", fmtSeconds(resp.GetUptimeSeconds()))
				if c := resp.GetCluster(); c != nil {
					kv.add("cluster nodes", itoa(c.GetNodeCount()))
				}
				if d := resp.GetDetails(); d != nil {
					kv.add("tasks running", itoa(d.GetActiveTasks())) // with an execution running on this node
					kv.add("running executions", itoa(d.GetRunningExecutions()))
					kv.add("pending executions", itoa(d.GetPendingExecutions()))
					kv.add("total executions", itoa(d.GetTotalExecutions()))
					kv.add("memory used", orDash(fmtBytes(d.GetTotalMemoryUsed())))
					kv = addSorted(kv, d.GetSystemInfo())
				}
				kv.print(a.stdout)
			}
			if resp.GetStatus() == "unhealthy" {
				return &cliError{class: errdefs.FailedPrecondition} // said on stdout
			}
			return nil
		},
	}
}

func (a *nodeCommands) newStatsCmd() *cobra.Command {
	var hours int32
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Show node, task and execution statistics",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if hours < 0 {
				return usageErrorf("--hours must not be negative")
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), a.timeout, c.GetStats, &spearlet.GetStatsRequest{
				IncludeTaskStats:      true,
				IncludeExecutionStats: true,
				TimeRangeHours:        hours,
			})
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(resp)
			}
			a.printStats(resp)
			return nil
		},
	}
	cmd.Flags().Int32Var(&hours, "hours", 0, "time range in hours (0: node default)")
	return cmd
}

func (a *nodeCommands) printStats(resp *spearlet.GetStatsResponse) {
	if s := resp.GetServiceStats(); s != nil {
		fmt.Fprintln(a.stdout, "Service")
		var kv kvList
		kv.add("  uptime", fmtSeconds(s.GetUptimeSeconds()))
		kv.add("  tasks", itoa(s.GetTotalTasks()))
		kv.add("  executions", itoa(s.GetTotalExecutions()))
		kv.add("  memory used", orDash(fmtBytes(s.GetTotalMemoryUsed())))
		kv.add("  cpu", fmt.Sprintf("%.1f%%", s.GetCpuUsagePercent()))
		kv.add("  memory", fmt.Sprintf("%.1f%%", s.GetMemoryUsagePercent()))
		kv.print(a.stdout)
	}
	if t := resp.GetTaskStats(); t != nil {
		fmt.Fprintln(a.stdout, "Tasks")
		var kv kvList
		kv.add("  running", itoa(t.GetActiveTasks())) // as health's "tasks running"
		kv.add("  idle", itoa(t.GetIdleTasks()))
		kv.add("  by type", fmtMap(t.GetTasksByType()))
		kv.print(a.stdout)
		if len(t.GetMostActiveTasks()) > 0 {
			fmt.Fprintln(a.stdout, "  most active:")
			tw := newTable(a.stdout)
			row(tw, "    TASK ID", "NAME", "EXECUTIONS", "LAST STATUS")
			for _, ti := range t.GetMostActiveTasks() {
				last := ""
				if ti.GetLastStatus() != spearlet.ExecutionStatus_EXECUTION_STATUS_UNKNOWN {
					last = statusName(ti.GetLastStatus())
				}
				row(tw, "    "+ti.GetTaskId(), orDash(ti.GetTaskName()), itoa(ti.GetExecutionCount()), orDash(last))
			}
			_ = tw.Flush()
		}
	}
	if e := resp.GetExecutionStats(); e != nil {
		fmt.Fprintln(a.stdout, "Executions")
		var kv kvList
		kv.add("  running", itoa(e.GetRunningExecutions()))
		kv.add("  pending", itoa(e.GetPendingExecutions()))
		kv.add("  completed", itoa(e.GetCompletedExecutions()))
		kv.add("  failed", itoa(e.GetFailedExecutions()))
		kv.add("  average time", fmt.Sprintf("%.1fms", e.GetAverageExecutionTimeMs()))
		kv.add("  success rate", fmt.Sprintf("%.1f%%", e.GetSuccessRatePercent()))
		kv.add("  by function", fmtMap(e.GetExecutionsByFunction()))
		kv.print(a.stdout)
	}
}

// addSorted appends a map's entries to kv in key order.
func addSorted(kv kvList, m map[string]string) kvList {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		kv.add(k, m[k])
	}
	return kv
}

func itoa[T int32 | int64](n T) string {
	return strconv.FormatInt(int64(n), 10)
}

// fmtSeconds formats a duration in seconds.
func fmtSeconds(s int64) string {
	return (time.Duration(s) * time.Second).String()
}
