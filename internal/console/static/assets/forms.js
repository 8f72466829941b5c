// forms.js: reading and checking form values before anything is sent,
// and the task limits fields (register form and task page).
import { check, field, h, message, showError } from "./ui.js";

// form is a form (id) of fields el, a submit button labelled label, an
// error line and a success line. On submit, read() checks the fields and
// returns the request or {error}; send(req, ok) sends it (ok: the success
// line). The button is disabled meanwhile; an error, the page's check or
// the node's code and message, shows in the error line.
export function form(id, label, el, read, send) {
  const err = message();
  const ok = message("okmsg");
  const button = h("button", { type: "submit", class: "primary", text: label });
  const f = h("form", { class: "stack", id, novalidate: true }, el, err, ok, h("div", { class: "actions" }, button));
  f.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showError(err, null);
    ok.hidden = true;
    const req = await read();
    if (req.error) return showError(err, { message: req.error });
    button.disabled = true;
    try { await send(req, ok); } catch (e) { showError(err, e); } finally { button.disabled = false; }
  });
  return f;
}

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;
const UNIT_MS = { ms: 1, s: 1000, m: 60000, h: 3600000 };

// parseDuration reads "500ms", "30s", "2m", "1h" (or a bare number of
// milliseconds) as milliseconds; "" is 0; anything else is NaN.
export function parseDuration(s) {
  s = s.trim();
  if (s === "") return 0;
  if (/^\d+$/.test(s)) return Number(s);
  const m = DURATION.exec(s);
  return m ? Math.round(Number(m[1]) * UNIT_MS[m[2]]) : NaN;
}

const BYTES = /^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|KB|MB|GB)?$/i;
const UNIT_B = { b: 1, kib: 1024, mib: 1 << 20, gib: 1 << 30, kb: 1e3, mb: 1e6, gb: 1e9 };

// parseBytes reads "256MiB", "1GiB", "1000000" as bytes; "" is 0.
export function parseBytes(s) {
  s = s.trim();
  if (s === "") return 0;
  const m = BYTES.exec(s);
  return m ? Math.round(Number(m[1]) * UNIT_B[(m[2] || "b").toLowerCase()]) : NaN;
}

// parseCount reads a whole number from min to max; "" is 0.
export function parseCount(s, min = 0, max = 2 ** 31 - 1) {
  s = s.trim();
  if (s === "") return 0;
  const n = Number(s);
  return /^-?\d+$/.test(s) && n >= min && n <= max ? n : NaN;
}

// parseEnv reads KEY=VALUE lines; it returns {env} or {error}.
export function parseEnv(text) {
  const env = {};
  for (const [i, line] of text.split("\n").entries()) {
    if (line.trim() === "") continue;
    const eq = line.indexOf("=");
    const key = eq > 0 ? line.slice(0, eq).trim() : "";
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) return { error: `line ${i + 1}: want KEY=VALUE (a name of letters, digits and _)` };
    env[key] = line.slice(eq + 1);
  }
  return { env };
}

// The limits fields: [key in TaskLimits, label, kind, hint].
const LIMITS = [
  ["maxConcurrency", "Max concurrency", "count", "running at once on one node; empty: no limit"],
  ["maxQueued", "Max queued", "count", "waiting to run; empty: no limit"],
  ["defaultTimeoutMs", "Default timeout", "duration", "e.g. 30s, 2m; empty: the node's"],
  ["maxTimeoutMs", "Max timeout", "duration", "cap on any execution's; empty: the node's"],
  ["memoryLimitBytes", "Memory limit", "bytes", "e.g. 256MiB; empty: none"],
  ["pidsLimit", "Processes", "count", "per execution; empty: the node's"],
  ["network", "Network", "network", "empty: sandboxed loopback; host: the host's"],
];

// inUnits writes n in the largest of units ([suffix, size], largest
// first) that divides it: the form parse reads back.
function inUnits(n, units) {
  n = Number(n || 0);
  if (!n) return "";
  const [suffix, size] = units.find(([, size]) => n % size === 0);
  return n / size + suffix;
}

const show = {
  count: (v) => (v ? String(v) : ""),
  duration: (v) => inUnits(v, [["h", 3600000], ["m", 60000], ["s", 1000], ["ms", 1]]),
  bytes: (v) => inUnits(v, [["GiB", 1 << 30], ["MiB", 1 << 20], ["KiB", 1024], ["", 1]]),
  network: (v) => v || "",
};
const parse = { count: (s) => parseCount(s), duration: parseDuration, bytes: parseBytes,
  network: (s) => (["", "host"].includes(s.trim()) ? s.trim() : NaN) };

// limitsFields renders the fields with limits' values; read() returns
// {limits} or, after marking the bad fields, {error}.
export function limitsFields(limits = {}, keys = LIMITS.map((l) => l[0])) {
  const inputs = {};
  const rows = LIMITS.filter((l) => keys.includes(l[0])).map(([key, label, kind, hint]) => {
    inputs[key] = h("input", { type: "text", name: key, value: show[kind](limits[key]), inputmode: kind === "count" ? "numeric" : null });
    return field(label, inputs[key], hint);
  });
  const read = () => {
    const out = {};
    const errors = [];
    for (const [key, label, kind, hint] of LIMITS.filter((l) => inputs[l[0]])) {
      const v = parse[kind](inputs[key].value);
      errors.push(check(inputs[key], Number.isNaN(v), `${label}: not valid (${hint})`));
      if (v) out[key] = v;
    }
    const error = errors.filter(Boolean).join("\n");
    return error ? { error } : { limits: out };
  };
  return { el: h("div", { class: "fields" }, rows), read };
}
