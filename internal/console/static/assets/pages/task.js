// pages/task.js: /ui/tasks/{id} — the task's artifact, its limits
// (editable), the invoke form, its recent executions and their durations.
import { call } from "../api.js";
import { bars } from "../chart.js";
import { form, limitsFields } from "../forms.js";
import { invokeCard } from "../invoke.js";
import { every } from "../live.js";
import {
  badge, card, execLink, facts, fmtMs, fmtTime, h, message, page, replace, say, short, showError, table,
} from "../ui.js";

export async function render(id) {
  const err = message();
  page(id, err);
  let resp;
  try {
    resp = await call("GetTask", { taskId: id, includeExecutions: true, executionLimit: 200 });
  } catch (e) { return showError(err, e); }
  if (!resp.found) return showError(err, { code: "TASK_NOT_FOUND", message: resp.message });
  const about = h("div", {}, taskFacts(resp.task));
  const recent = h("div", { id: "task-executions" });
  const hist = h("div");
  const refresh = async () => {
    const r = await call("GetTask", { taskId: id, includeExecutions: true, executionLimit: 200 });
    replace(about, taskFacts(r.task));
    fillRecent(recent, hist, r.executions || []);
  };
  fillRecent(recent, hist, resp.executions || []);
  // Every 5 s while visible, and after an invocation: a sync execution's
  // record is written a moment after its answer.
  const poller = every(5000, () => refresh().catch((e) => showError(err, e)));
  page(id, err, h("div", { class: "grid" }, card("Task", about), limitsCard(resp.task)),
    h("div", { class: "split" }, invokeCard(id, () => poller.now()), card("Duration of recent executions", hist)),
    h("div", { class: "grid" }, wide(card("Recent executions", recent))));
}

const wide = (el) => (el.classList.add("wide"), el);

function taskFacts(t) {
  const a = t.artifactSpec || {};
  const meta = Object.entries(a.metadata || {}).map(([k, v]) => k + "=" + v).join(", ");
  return facts([
    ["Name", t.taskName], ["Description", t.description], ["Runtime", a.artifactType],
    ["Location", h("span", { class: "mono", text: a.location || "" })],
    ["Checksum", h("span", { class: "mono", text: a.checksum || "" })], ["Version", a.version], ["Artifact metadata", meta],
    ["Executions", String(t.executionCount || 0)], ["Last status", t.lastStatus ? badge(t.lastStatus) : ""],
    ["Created", fmtTime(t.createdAt)], ["Updated", fmtTime(t.updatedAt)],
  ]);
}

function limitsCard(t) {
  const f = limitsFields(t.limits || {});
  return card("Limits", form("limits-form", "Save limits", f.el, f.read, async (r, ok) => {
    await call("UpdateTaskLimits", { taskId: t.taskId, limits: r.limits });
    say(ok, "Limits saved.");
  }));
}

function fillRecent(el, hist, execs) {
  replace(el, table([
    { label: "Execution", cell: (e) => execLink(e.executionId) },
    { label: "Mode", narrow: true, cell: (e) => short(e.executionMode) },
    { label: "Status", cell: (e) => badge(e.status) },
    { label: "Created", narrow: true, nowrap: true, cell: (e) => fmtTime(e.createdAt) },
    { label: "Duration", num: true, cell: (e) => (e.executionTimeMs ? fmtMs(e.executionTimeMs) : "") },
    { label: "Error", cell: (e) => h("span", { class: "mono", text: e.errorCode || "" }) },
  ], execs, "No executions yet."));
  const done = execs.filter((e) => short(e.status) === "COMPLETED").map((e) => Number(e.executionTimeMs || 0));
  replace(hist, done.length ? bars(`Durations of the last ${done.length} completed executions`, histogram(done))
    : h("p", { class: "muted", text: "No completed executions yet." }), h("p", { class: "hint", text: `${done.length} completed executions among the latest ${execs.length}.` }));
}

// histogram sorts durations (ms) into up to 10 equal bins.
function histogram(ms) {
  const lo = Math.min(...ms);
  const hi = Math.max(...ms);
  const n = Math.min(10, Math.max(1, new Set(ms).size));
  const width = Math.max(1, Math.ceil((hi - lo + 1) / n));
  const bins = Array.from({ length: n }, (_, i) => ({ label: fmtMs(lo + i * width), count: 0 }));
  for (const v of ms) bins[Math.min(n - 1, Math.floor((v - lo) / width))].count++;
  return bins;
}
