// ui.js: building the DOM (never from HTML strings: every value is text)
// and formatting the node's values.

// h makes an element: props sets attributes ("class", "text", "on*"
// handlers, booleans), children are nodes or strings (null is skipped).
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

// replace empties el and fills it with children.
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// page sets the document's title and the main region's content.
export function page(title, ...children) {
  document.title = title + " · Spear";
  return replace(document.getElementById("main"), h("h1", { text: title }), ...children);
}

export function card(title, ...children) {
  return h("section", { class: "card" }, title ? h("h2", { text: title }) : null, ...children);
}

// facts is a definition list of [label, value] pairs (empty values left out).
export function facts(pairs) {
  const dl = h("dl", { class: "facts" });
  for (const [k, v] of pairs) {
    if (v === "" || v === null || v === undefined) continue;
    dl.append(h("dt", { text: k }), h("dd", {}, v));
  }
  return dl;
}

// table renders rows with columns [{label, cell(row), num, narrow,
// nowrap}]: num right-aligns, narrow hides on a phone, nowrap keeps a
// cell on one line.
export function table(columns, rows, empty = "Nothing to show.") {
  if (!rows.length) return h("p", { class: "muted", text: empty });
  const head = h("tr", {}, columns.map((c) => h("th", { scope: "col", class: colClass(c) }, c.label)));
  const body = rows.map((r) => h("tr", {}, columns.map((c) => h("td", { class: colClass(c) }, c.cell(r)))));
  return h("div", { class: "scroll" }, h("table", {}, h("thead", {}, head), h("tbody", {}, body)));
}

function colClass(c) {
  return [c.num ? "num" : "", c.narrow ? "hide-narrow" : "", c.nowrap ? "nowrap" : ""].join(" ").trim() || null;
}

export const link = (href, text) => h("a", { href }, text);
export const taskLink = (id) => link("/ui/tasks/" + encodeURIComponent(id), id);
export const execLink = (id) => link("/ui/executions/" + encodeURIComponent(id), h("span", { class: "mono", text: id }));

// short strips an enum's prefix: EXECUTION_STATUS_FAILED -> FAILED.
export function short(v, fallback = "UNKNOWN") {
  if (!v) return fallback;
  return String(v).replace(/^(EXECUTION_STATUS|EXECUTION_MODE|INVOCATION_TYPE)_/, "");
}

export function badge(status) {
  const s = short(status);
  return h("span", { class: "badge st-" + s, "data-status": s, text: s });
}

export const terminal = (status) => ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"].includes(short(status));

export function fmtMs(ms) {
  ms = Number(ms || 0);
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
  const m = Math.floor(ms / 60000);
  if (m < 60) return m + " min " + Math.round((ms % 60000) / 1000) + " s";
  return Math.floor(m / 60) + " h " + (m % 60) + " min";
}

export function fmtBytes(n) {
  n = Number(n || 0);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

// dateOf reads a timestamp: RFC 3339, or Unix ms (a number or a string
// of digits, as int64 fields come in JSON).
const dateOf = (t) => new Date(typeof t === "string" && /^\d+$/.test(t) ? Number(t) : t);

// fmtTime shows a timestamp in local time.
export function fmtTime(t) {
  const d = dateOf(t);
  if (!t || isNaN(d)) return "";
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

// ago shows how long ago a timestamp was.
export function ago(t) {
  if (!t) return "";
  const s = Math.max(0, Math.round((Date.now() - dateOf(t).getTime()) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  return Math.floor(s / 3600) + " h ago";
}

// errorText is how an error is shown: the node's code and message as
// they came (a form's own check has a message only).
export const errorText = (err) => (err.code ? err.code + ": " + err.message : err.message || String(err));

// showError puts err (or nothing) in el, a message region.
export function showError(el, err) {
  el.hidden = !err;
  el.textContent = err ? errorText(err) : "";
}

// field is a labelled control with an optional hint.
export function field(label, control, hint) {
  if (!control.id) control.id = "f-" + Math.random().toString(36).slice(2, 9);
  return h("div", {}, h("label", { for: control.id, text: label }), control, hint ? h("p", { class: "hint", text: hint }) : null);
}

// check marks control invalid with msg when bad (valid otherwise) and
// returns msg when bad, else "".
export function check(control, bad, msg) {
  control.setAttribute("aria-invalid", bad ? "true" : "false");
  control.setCustomValidity(bad ? msg : "");
  return bad ? msg : "";
}

// say shows children in el, a message line.
export function say(el, ...children) {
  replace(el, ...children);
  el.hidden = false;
}

export function message(cls = "error") {
  return h("p", { class: cls, role: cls === "error" ? "alert" : "status", hidden: true });
}

// meter is a bar showing v of max.
export function meter(v, max) {
  const fill = h("span");
  fill.style.width = (max > 0 ? Math.min(100, (100 * v) / max) : 0) + "%"; // CSSOM: allowed by the page's policy
  return h("span", { class: "meter", role: "meter", "aria-valuemin": "0", "aria-valuemax": String(max),
    "aria-valuenow": String(v), "aria-label": `${v} of ${max}` }, fill);
}
