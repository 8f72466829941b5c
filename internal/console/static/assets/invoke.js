// invoke.js: the task page's invoke form — input (text or a file), mode,
// environment, priority, timeout — and the result: a sync call's output,
// an async execution's status as it changes, a stream's chunks.
import { call, stream } from "./api.js";
import { form, parseCount, parseDuration, parseEnv } from "./forms.js";
import { follow } from "./live.js";
import { bytesOf, liveOutput, outputHead, outputView } from "./output.js";
import { badge, card, check, execLink, field, fmtMs, h, replace, terminal } from "./ui.js";

const outputHref = (id) => `/api/v1/executions/${encodeURIComponent(id)}/output`;

// invokeCard is the form for task taskId; onDone runs when an execution
// it started ends.
export function invokeCard(taskId, onDone) {
  const f = invokeFields();
  const result = h("div", { id: "invoke-result", "aria-live": "polite" });
  return card("Invoke", form("invoke-form", "Invoke", f.el, () => f.read(taskId), async (req) => {
    replace(result, h("p", { class: "muted", text: "Invoking…" }));
    try {
      await run(req, result, onDone);
    } catch (e) {
      replace(result);
      throw e;
    }
  }), result);
}

function run(req, result, onDone) {
  if (req.mode === "stream") return runStream(req.body, result, onDone);
  return req.mode === "async" ? runAsync(req.body, result, onDone) : runSync(req.body, result, onDone);
}

async function runSync(body, result, onDone) {
  const resp = await call("InvokeFunction", { ...body, executionMode: "EXECUTION_MODE_SYNC" });
  const r = resp.result || {};
  if (!resp.executionId) throw { code: r.errorCode || "INVOCATION_FAILED", message: resp.message || r.errorMessage };
  const bytes = bytesOf(r.result);
  replace(result, summary(resp.executionId, r.status, r),
    outputView(bytes, Number(r.outputSize) || bytes.length, outputHref(resp.executionId)));
  onDone();
}

function summary(id, status, r = {}) {
  return h("p", { class: "row" }, badge(status), execLink(id),
    r.executionTimeMs ? h("span", { class: "muted", text: fmtMs(r.executionTimeMs) }) : null,
    r.errorCode ? h("span", { class: "error", text: r.errorCode + ": " + (r.errorMessage || "") }) : null);
}

async function runAsync(body, result, onDone) {
  const resp = await call("InvokeFunction", { ...body, executionMode: "EXECUTION_MODE_ASYNC" });
  if (!resp.executionId) throw { code: resp.result?.errorCode || "INVOCATION_FAILED", message: resp.message };
  const id = resp.executionId;
  const head = h("div", {}, summary(id, "PENDING"));
  const out = h("div");
  replace(result, head, out);
  follow(id, async (ev) => {
    replace(head, summary(id, ev.status, ev.result));
    if (!terminal(ev.status)) return;
    const o = await outputHead(id);
    replace(out, outputView(o.bytes, o.total, outputHref(id)));
    onDone();
  }, (e) => replace(head, h("p", { class: "error", text: e.code + ": " + e.message })));
}

async function runStream(body, result, onDone) {
  const live = liveOutput();
  const head = h("div", {}, h("p", { class: "muted", text: "Starting…" }));
  replace(result, head, live.el);
  await stream("StreamFunction", { ...body, executionMode: "EXECUTION_MODE_STREAM" }, (m) => {
    if (m.chunkData) live.add(bytesOf(m.chunkData));
    const r = m.isFinal ? { errorCode: m.errorCode, errorMessage: m.errorMessage, executionTimeMs: m.metadata?.execution_time_ms } : {};
    replace(head, summary(m.executionId, m.status, r));
  });
  onDone();
}

// invokeFields are the form's fields; read() checks them and returns
// {mode, body} (the InvokeFunction request) or {error}.
function invokeFields() {
  const input = h("textarea", { name: "input", rows: "3", spellcheck: "false" });
  const file = h("input", { type: "file", name: "inputFile" });
  const mode = h("select", { name: "mode" }, [["sync", "sync: wait for the result"], ["async", "async: queue it, follow it"],
    ["stream", "stream: output as it is written"]].map(([v, t]) => h("option", { value: v, text: t })));
  const env = h("textarea", { name: "env", rows: "2", spellcheck: "false", placeholder: "NAME=value" });
  const prio = h("input", { type: "text", name: "priority", inputmode: "numeric", placeholder: "0" });
  const timeout = h("input", { type: "text", name: "timeout", placeholder: "the task's default" });
  const el = h("div", { class: "stack" }, field("Input", input, "the function's standard input"),
    field("…or input from a file", file),
    h("div", { class: "fields" }, field("Mode", mode), field("Priority", prio, "a whole number; higher runs first when the node is busy"),
      field("Timeout", timeout, "e.g. 500ms, 30s, 2m")),
    field("Environment", env, "one KEY=value per line"));
  const read = async (taskId) => {
    const e = parseEnv(env.value);
    const p = parseCount(prio.value, -(2 ** 31), 2 ** 31 - 1);
    const t = parseDuration(timeout.value);
    const error = [check(env, !!e.error, "Environment: " + e.error), check(prio, Number.isNaN(p), "Priority: a whole number (32-bit)"),
      check(timeout, Number.isNaN(t), "Timeout: a duration such as 500ms, 30s or 2m")].filter(Boolean).join("\n");
    if (error) return { error };
    const value = await inputValue(input.value, file.files[0]);
    const body = { taskId, priority: p, context: { environment: e.env, timeoutMs: t }, parameters: value ? [{ name: "input", value }] : [] };
    return { mode: mode.value, body };
  };
  return { el, read };
}

// inputValue is the input as an Any: a file's bytes, or the text.
async function inputValue(text, file) {
  if (file) {
    const bytes = new Uint8Array(await file.arrayBuffer());
    let bin = "";
    for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return { "@type": "type.googleapis.com/google.protobuf.BytesValue", value: btoa(bin) };
  }
  return text ? { "@type": "type.googleapis.com/google.protobuf.StringValue", value: text } : null;
}
