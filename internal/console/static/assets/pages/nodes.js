// pages/nodes.js: /ui/nodes — every node sharing the store (ListNodes):
// its load, its runtimes and the executions it runs now.
import { call, getJSON } from "../api.js";
import { every } from "../live.js";
import { ago, card, execLink, fmtTime, h, message, meter, page, replace, showError, table } from "../ui.js";

export function render() {
  const err = message();
  const list = h("div", { id: "node-list" }, h("p", { class: "muted", text: "Loading…" }));
  page("Nodes", err, card("", list, h("p", { class: "hint", text: "Nodes advertise themselves every second. Running now: executions among the latest 1000, by the node that runs them." })));
  every(5000, async () => {
    try {
      const [nodes, running] = await Promise.all([call("ListNodes", {}), getJSON("/ui/api/executions?status=RUNNING&limit=1000")]);
      showError(err, null);
      replace(list, nodeTable(nodes.nodes || [], byNode(running.executions)));
    } catch (e) { showError(err, e); }
  });
}

function byNode(rows) {
  const m = {};
  for (const r of rows) (m[r.node] ||= []).push(r.execution);
  return m;
}

function nodeTable(nodes, running) {
  return table([
    { label: "Node", nowrap: true, cell: (n) => [h("span", { class: "mono", text: n.nodeId }), n.self ? " (this one)" : ""] },
    { label: "Address", narrow: true, cell: (n) => n.address || "" },
    { label: "Slots busy", nowrap: true, cell: (n) => [meter(n.slotsBusy || 0, n.slotsTotal || 0), ` ${n.slotsBusy || 0} / ${n.slotsTotal || 0}`] },
    { label: "Waiting", num: true, cell: (n) => String(n.waiting || 0) },
    { label: "Runtimes", cell: (n) => (n.runtimes || []).join(", ") },
    { label: "Running now", cell: (n) => runningList(running[n.nodeId] || []) },
    { label: "Version", narrow: true, cell: (n) => n.version || "" },
    { label: "Started", narrow: true, nowrap: true, cell: (n) => fmtTime(n.startedAt) },
    { label: "Heartbeat", narrow: true, cell: (n) => ago(n.lastHeartbeat) },
  ], nodes, "No nodes: the node registry is empty.");
}

function runningList(execs) {
  if (!execs.length) return h("span", { class: "muted", text: "idle" });
  const shown = execs.slice(0, 5).map((e) => h("div", {}, execLink(e.executionId), " ", e.taskId));
  return execs.length > 5 ? [...shown, h("div", { class: "muted", text: `and ${execs.length - 5} more` })] : shown;
}
