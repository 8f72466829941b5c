// pages/overview.js: /ui/ — health, capacity, the queue by priority band,
// throughput and duration over the last minutes, and recent failures.
import { call, getJSON } from "../api.js";
import { lines } from "../chart.js";
import { every } from "../live.js";
import {
  ago, badge, card, execLink, facts, fmtBytes, fmtMs, h, message, meter, page, replace, showError, table, taskLink,
} from "../ui.js";

// BAND_NAMES are the priorities of each band (store.Band).
const BAND_NAMES = ["≤ −10", "−9 … −1", "0", "1 … 9", "≥ 10"];

export function render() {
  const err = message();
  const parts = {};
  const section = (key, title, wide) => {
    parts[key] = h("div", { "data-part": key }, h("p", { class: "muted", text: "Loading…" }));
    const c = card(title, parts[key]);
    if (wide) c.classList.add("wide");
    return c;
  };
  page("Overview", err,
    h("div", { class: "grid" }, section("health", "Health"), section("capacity", "Capacity"), section("queue", "Queue by priority band")),
    h("div", { class: "grid" }, section("rate", "Executions per second · this node"), section("latency", "Duration p50 / p99 · this node")),
    h("div", { class: "grid" }, section("failures", "Recent failures", true)));
  every(5000, async () => {
    try {
      const [health, ov, failed] = await Promise.all([
        call("GetHealth", { includeDetails: true }), getJSON("/ui/api/overview"),
        getJSON("/ui/api/executions?status=FAILED&limit=8&scan=200"),
      ]);
      showError(err, null);
      fillHealth(parts.health, health);
      fillCapacity(parts.capacity, health.cluster || { nodes: [] });
      fillQueue(parts.queue, ov);
      fillCharts(parts.rate, parts.latency, ov);
      fillFailures(parts.failures, failed.executions);
    } catch (e) { showError(err, e); }
  });
}

function fillHealth(el, hl) {
  const d = hl.details || {};
  const info = d.systemInfo || {};
  replace(el, h("p", {}, badge(hl.status), " ", hl.message || ""), facts([
    ["Node", info.node_id], ["Up", fmtMs(Number(hl.uptimeSeconds || 0) * 1000)],
    ["Running", String(d.runningExecutions || 0)], ["Pending", String(d.pendingExecutions || 0)],
    ["Executions recorded", String(d.totalExecutions || 0)], ["Memory (RSS)", fmtBytes(d.totalMemoryUsed)],
    ["Store", info.store_bytes ? fmtBytes(info.store_bytes) + (Number(info.store_budget_bytes) ? " of " + fmtBytes(info.store_budget_bytes) : "") : ""],
  ]));
}

function fillCapacity(el, cluster) {
  const nodes = cluster.nodes || [];
  const sum = (k) => nodes.reduce((n, x) => n + Number(x[k] || 0), 0);
  const runtimes = [...new Set(nodes.flatMap((n) => n.runtimes || []))].sort();
  const total = sum("slotsTotal");
  const busy = sum("slotsBusy");
  replace(el, h("p", { class: "big" }, `${busy} / ${total} `, h("small", { text: "slots busy" })), h("p", {}, meter(busy, total)), facts([
      ["Nodes", h("a", { href: "/ui/nodes" }, String(nodes.length))], ["Slots free", String(sum("slotsFree"))],
      ["Waiting for a slot", String(sum("waiting"))], ["Runtimes", runtimes.join(", ") || "none"],
    ]));
}

function fillQueue(el, ov) {
  const bands = ov.queueBands || [];
  replace(el, h("div", { class: "bands" }, BAND_NAMES.map((name, i) =>
    h("div", {}, h("div", { class: "big", text: String(bands[i] || 0) }), h("div", { class: "muted", text: name })))),
  ov.queueError ? h("p", { class: "error", text: "The queue does not answer: " + ov.queueError }) : null,
  h("p", { class: "hint", text: "Async executions waiting in the durable queue (every node's), by the priority they were given." }));
}

function fillCharts(rateEl, latEl, ov) {
  const b = ov.buckets || [];
  const sec = ov.bucketSeconds || 30;
  const times = b.map((x) => x.start + sec * 1000);
  const perSec = (v) => Number((v / sec).toFixed(2));
  const total = b.reduce((n, x) => n + x.count, 0);
  replace(rateEl, lines(`Executions per second over the last ${b.length * sec / 60} minutes`, times,
    [{ values: b.map((x) => perSec(x.count)) }, { values: b.map((x) => perSec(x.failed)) }], (v) => v.toFixed(v > 0 && v < 1 ? 2 : v < 10 ? 1 : 0)),
  legend(["finished", "not completed"]), h("p", { class: "hint", text: `${total} finished in the last ${b.length * sec / 60} minutes, ${sec} s buckets.` }));
  replace(latEl, lines("Duration percentiles", times,
    [{ values: b.map((x) => x.p50Ms) }, { values: b.map((x) => x.p99Ms) }], (v) => fmtMs(Math.round(v))),
  legend(["p50", "p99"]));
}

const legend = (names) => h("div", { class: "legend" }, names.map((n, i) => h("span", { class: "k" + i, text: n })));

function fillFailures(el, rows) {
  replace(el, table([
    { label: "Execution", cell: (r) => execLink(r.execution.executionId) },
    { label: "Task", cell: (r) => taskLink(r.execution.taskId) },
    { label: "Error", cell: (r) => h("span", { class: "mono", text: r.execution.errorCode || "" }) },
    { label: "Message", narrow: true, cell: (r) => h("span", { class: "clip", title: r.execution.errorMessage || "", text: r.execution.errorMessage || "" }) },
    { label: "When", nowrap: true, cell: (r) => ago(r.execution.completedAt || r.execution.createdAt) },
  ], rows, "No failed executions among the latest 200."), h("p", {}, h("a", { href: "/ui/executions?status=FAILED" }, "All failed executions")));
}
