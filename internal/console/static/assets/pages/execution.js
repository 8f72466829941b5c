// pages/execution.js: /ui/executions/{id} — the execution's status as it
// changes (WatchExecution), its timeline by attempt, its output (first
// 64 KiB, text or hex, download), its logs following live, and cancel,
// requeue and attach.
import { call, getJSON, stream } from "../api.js";
import { every, follow } from "../live.js";
import { bytesOf, liveOutput, outputHead, outputView } from "../output.js";
import {
  badge, card, facts, fmtBytes, fmtMs, fmtTime, h, message, page, replace, say, short, showError, taskLink, terminal,
} from "../ui.js";

const outputHref = (id) => `/api/v1/executions/${encodeURIComponent(id)}/output`;

export function render(id) {
  const v = {
    err: message(), status: h("span", { id: "exec-status" }), facts: h("div"), actions: h("div", { id: "exec-actions" }),
    timeline: h("div", { id: "exec-timeline" }), output: h("div", { id: "exec-output" }, h("p", { class: "muted", text: "When it ends." })),
    logs: h("pre", { class: "out", id: "exec-logs", tabindex: "0", "aria-label": "Logs" }), attach: h("div", { id: "exec-attach" }),
    done: message("okmsg"), refused: message(),
  };
  v.done.id = "action-done";
  page("Execution " + id, v.err, h("div", { class: "grid" }, card("Status", h("p", {}, v.status), v.facts), card("Actions", v.actions, v.done, v.refused), card("Timeline", v.timeline)),
    h("div", { class: "grid" }, wide(card("Output", v.output)), wide(card("Attached output", v.attach)), wide(card("Logs (standard error)", v.logs))));
  const ex = { id, v, last: "", outputShown: false, queue: Promise.resolve() };
  // One refresh at a time, in order: a watch event and the log poll may
  // both ask.
  ex.refresh = () => (ex.queue = ex.queue.then(() => refresh(ex)).catch((e) => showError(v.err, e)));
  ex.poller = every(2000, async () => { if (!terminal(ex.last)) await ex.refresh(); });
  watch(ex);
  replace(v.attach, attachButton(ex));
}

const wide = (el) => (el.classList.add("wide"), el);

// watch follows the execution's status; each change refreshes the page.
function watch(ex) {
  ex.watch?.abort();
  ex.watch = follow(ex.id, () => ex.refresh(), (e) => showError(ex.v.err, e));
}

async function refresh(ex) {
  let st;
  let row;
  try {
    [st, row] = await Promise.all([call("GetExecutionStatus", { executionId: ex.id, includeLogs: true }), getJSON("/ui/api/executions/" + encodeURIComponent(ex.id))]);
  } catch (e) { return showError(ex.v.err, e); }
  if (!st.found) return showError(ex.v.err, { code: "EXECUTION_NOT_FOUND", message: st.message });
  showError(ex.v.err, null);
  const r = st.result || {};
  const info = row.execution;
  const out = terminal(r.status) && !ex.outputShown ? await outputPart(ex) : null;
  ex.last = short(r.status);
  replace(ex.v.status, badge(r.status), r.deadLettered ? " dead-lettered" : "");
  replace(ex.v.facts, execFacts(info, r, row.node));
  replace(ex.v.timeline, timeline(info, r));
  // Rebuilt only when they change: a focused button or a ticked box stays.
  const can = `${terminal(r.status)} ${!!r.deadLettered}`;
  if (can !== ex.can) replace(ex.v.actions, actions(ex, r));
  ex.can = can;
  followLog(ex.v.logs, (st.logs || []).join("\n"));
  if (out) replace(ex.v.output, out);
}

// followLog shows text in pre, kept scrolled to the end when it was.
function followLog(pre, text) {
  if (pre.textContent === text) return;
  const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.textContent = text;
  if (atEnd) pre.scrollTop = pre.scrollHeight;
}

function execFacts(info, r, node) {
  return facts([
    ["Task", taskLink(info.taskId)], ["Function", info.functionName], ["Mode", short(info.executionMode)],
    ["Priority", String(info.priority || 0)], ["Attempts", String(r.attempts || info.attempts || 0)], ["Node", node],
    ["Accepted", fmtTime(info.createdAt)], ["Started", fmtTime(r.startedAt)], ["Ended", fmtTime(r.completedAt)],
    ["Duration", r.executionTimeMs ? fmtMs(r.executionTimeMs) : ""], ["Memory", r.memoryUsedBytes ? fmtBytes(r.memoryUsedBytes) : ""],
    ["Exit code", terminal(r.status) ? String(r.exitCode || 0) : ""],
    ["Error", r.errorCode ? h("span", { class: "error", text: r.errorCode + ": " + (r.errorMessage || "") }) : ""],
    ["Sandbox", r.sandbox], ["Callback", r.callback ? `${r.callback.state} (${r.callback.url})` : ""],
  ]);
}

// timeline lists accepted, then each attempt's start and end, oldest
// first.
function timeline(info, r) {
  const items = [item("PENDING", "Accepted", info.createdAt)];
  for (const a of r.attemptHistory || []) {
    const on = a.node ? " on " + a.node : "";
    items.push(item("RUNNING", `Attempt ${a.attempt} started${on}`, a.startedAt));
    if (a.completedAt || terminal(a.status)) {
      const code = a.errorCode && a.errorCode !== short(a.status) ? a.errorCode + ": " : "";
      const why = a.errorCode || a.errorMessage ? ` — ${code}${a.errorMessage || ""}` : "";
      items.push(item(short(a.status), `Attempt ${a.attempt}: ${short(a.status)}${why}`, a.completedAt));
    }
  }
  if (terminal(r.status) && !(r.attemptHistory || []).length) items.push(item(short(r.status), short(r.status), r.completedAt));
  return h("ol", { class: "timeline" }, items);
}

const item = (status, text, t) => h("li", { class: "st-" + status }, h("div", { text }), h("div", { class: "when", text: fmtTime(t) }));

// actions are the buttons the execution's state allows.
function actions(ex, r) {
  const out = [];
  if (!terminal(r.status)) {
    const force = h("input", { type: "checkbox", id: "cancel-force" });
    const btn = h("button", { type: "button", class: "danger", id: "cancel-button", text: "Cancel execution" });
    btn.addEventListener("click", () => act(ex, btn, "CancelExecution", { executionId: ex.id, reason: "cancelled from the console", force: force.checked }));
    out.push(h("div", { class: "row" }, btn, h("label", { class: "inline", for: "cancel-force" }, force, "force (no grace period)")));
  }
  if (r.deadLettered) {
    const btn = h("button", { type: "button", class: "primary", id: "requeue-button", text: "Requeue" });
    btn.addEventListener("click", () => act(ex, btn, "RequeueExecution", { executionId: ex.id }));
    out.push(btn);
  }
  if (!out.length) out.push(h("p", { class: "muted", text: "It has ended: nothing to cancel." }));
  return out;
}

// act calls method and shows its answer, or the node's refusal.
async function act(ex, btn, method, body) {
  btn.disabled = true;
  showError(ex.v.refused, null);
  try {
    const resp = await call(method, body);
    if (resp.success) say(ex.v.done, resp.message || "Done.");
    else showError(ex.v.refused, { message: resp.message || "The node did not do it." });
    ex.outputShown = false;
    ex.can = "";
    await ex.refresh();
    watch(ex);
  } catch (e) { showError(ex.v.refused, e); btn.disabled = false; }
}

// outputPart is the view of the ended execution's output.
async function outputPart(ex) {
  ex.outputShown = true;
  try {
    const o = await outputHead(ex.id);
    return outputView(o.bytes, o.total, outputHref(ex.id));
  } catch (e) {
    ex.outputShown = false;
    return h("p", { class: "error", text: e.code + ": " + e.message });
  }
}

// attachButton starts StreamFunction on the execution: its output from
// the first chunk, then live until it ends.
function attachButton(ex) {
  const btn = h("button", { type: "button", id: "attach-button", text: "Attach: replay and follow the output" });
  btn.addEventListener("click", async () => {
    btn.disabled = true;
    const live = liveOutput();
    const end = h("p", { class: "muted" });
    replace(ex.v.attach, live.el, end);
    try {
      await stream("StreamFunction", { context: { executionId: ex.id } }, (m) => {
        if (m.chunkData) live.add(bytesOf(m.chunkData));
        if (m.isFinal) replace(end, "Ended: ", badge(m.status), m.errorCode ? ` ${m.errorCode}: ${m.errorMessage || ""}` : "");
      });
    } catch (e) { replace(end, h("span", { class: "error", text: e.code + ": " + e.message })); }
  });
  return [h("p", { class: "hint", text: "Streams the output as the node stores it, from the start." }), btn];
}
