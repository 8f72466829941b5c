// pages/executions.js: /ui/executions — executions newest first, filtered
// by status, task, mode, age and dead-lettered. The filters are the URL's
// query, so a filtered table can be bookmarked.
import { getJSON } from "../api.js";
import { every } from "../live.js";
import {
  badge, card, check, execLink, field, fmtMs, fmtTime, h, message, page, replace, short, showError, table, taskLink,
} from "../ui.js";

const STATUSES = ["", "PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"];
const MODES = ["", "SYNC", "ASYNC", "STREAM"];
const AGES = [["", "any time"], ["15m", "last 15 minutes"], ["1h", "last hour"], ["24h", "last 24 hours"], ["168h", "last 7 days"]];

export function render() {
  const err = message();
  const rows = h("div", { id: "exec-table" }, h("p", { class: "muted", text: "Loading…" }));
  const f = filterForm();
  const load = async () => {
    try {
      const r = await getJSON("/ui/api/executions?" + f.query());
      showError(err, null);
      replace(rows, execTable(r.executions));
    } catch (e) { showError(err, e); }
  };
  const poller = every(5000, load);
  f.el.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (f.bad()) return showError(err, { message: f.bad() });
    history.replaceState(null, "", "?" + f.query());
    poller.now();
  });
  f.el.addEventListener("change", () => f.el.requestSubmit());
  page("Executions", card("", f.el, err, rows, h("p", { class: "hint",
    text: "Newest first: the filters apply to the latest 1000 executions (of the task, when one is named). Refreshed every 5 s." })));
}

function select(name, options, value) {
  return h("select", { name }, options.map(([v, t]) => h("option", { value: v, text: t, selected: v === value })));
}

// filterForm reads its initial values from the URL; query() is the
// filters as a query string, bad() says what is wrong with them.
function filterForm() {
  const q = new URLSearchParams(location.search);
  const status = select("status", STATUSES.map((s) => [s, s || "any status"]), q.get("status") || "");
  const mode = select("mode", MODES.map((m) => [m, m || "any mode"]), q.get("mode") || "");
  const since = select("since", AGES, q.get("since") || "");
  const task = h("input", { type: "text", name: "task", value: q.get("task") || "", placeholder: "any task", autocomplete: "off" });
  const dead = h("input", { type: "checkbox", name: "dead", checked: q.get("dead") === "true" });
  const el = h("form", { id: "exec-filter", class: "stack", role: "search" },
    h("div", { class: "fields" }, field("Status", status), field("Task", task), field("Mode", mode), field("Created", since)),
    h("div", { class: "row" }, h("label", { class: "inline" }, dead, "dead-lettered only"), h("button", { type: "submit", text: "Filter" })));
  const bad = () => check(task, task.value.trim() !== "" && !/^[A-Za-z0-9_-]{1,128}$/.test(task.value.trim()),
    "Task: a task id (1-128 of A-Z a-z 0-9 _ -)");
  const query = () => {
    const p = new URLSearchParams();
    for (const [k, v] of [["status", status.value], ["task", task.value.trim()], ["mode", mode.value], ["since", since.value]]) if (v) p.set(k, v);
    if (dead.checked) p.set("dead", "true");
    return p.toString();
  };
  return { el, query, bad };
}

function execTable(rows) {
  return table([
    { label: "Execution", cell: (r) => execLink(r.execution.executionId) },
    { label: "Task", cell: (r) => taskLink(r.execution.taskId) },
    { label: "Mode", narrow: true, cell: (r) => short(r.execution.executionMode) },
    { label: "Status", cell: (r) => [badge(r.execution.status), r.execution.deadLettered ? " dead-lettered" : ""] },
    { label: "Created", narrow: true, nowrap: true, cell: (r) => fmtTime(r.execution.createdAt) },
    { label: "Duration", num: true, cell: (r) => (r.execution.executionTimeMs ? fmtMs(r.execution.executionTimeMs) : "") },
    { label: "Attempts", num: true, narrow: true, cell: (r) => String(r.execution.attempts || 0) },
    { label: "Error", cell: (r) => h("span", { class: "mono", text: r.execution.errorCode || "" }) },
    { label: "Node", narrow: true, cell: (r) => r.node || "" },
  ], rows, "No executions match.");
}
