// api.js: the node's API as the console calls it — Connect JSON for the
// FunctionService's methods, Connect's streaming envelope for its server
// streams, and the plain HTTP routes — with the tab's token, the
// connection banner and the token prompt.

const SERVICE = "/spearlet.FunctionService/";
const TOKEN_KEY = "spear-token";

// ApiError is a failed call: the node's error code (e.g. TASK_NOT_FOUND)
// and message as it returned them, and the HTTP status (0: no answer).
export class ApiError extends Error {
  constructor(code, message, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

export const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function withToken(headers) {
  const hd = new Headers(headers);
  if (token()) hd.set("Authorization", "Bearer " + token());
  return hd;
}

// request fetches path with the token; an answer that is not 2xx throws
// its ApiError, no answer marks the connection lost.
export async function request(path, init = {}) {
  let resp;
  try {
    resp = await fetch(path, { ...init, headers: withToken(init.headers) });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    connection.lost();
    throw new ApiError("UNAVAILABLE", "the node cannot be reached (" + e.message + ")", 0);
  }
  connection.ok();
  if (!resp.ok) throw await errorOf(resp);
  return resp;
}

async function errorOf(resp) {
  let body = {};
  try { body = await resp.json(); } catch { /* not JSON */ }
  const code = resp.headers.get("Spear-Error-Code") || reasonOf(body) || "HTTP_" + resp.status;
  return authChecked(new ApiError(code, body.message || resp.statusText, resp.status));
}

// reasonOf is the error code in a Connect error's ErrorInfo detail.
function reasonOf(err) {
  for (const d of (err && err.details) || []) if (d.debug && d.debug.reason) return d.debug.reason;
  return err && err.code ? String(err.code).toUpperCase() : "";
}

function authChecked(err) {
  if (err.status === 401 || err.code === "AUTH_REQUIRED" || err.code === "AUTH_INVALID") auth.prompt(err);
  return err;
}

// call invokes a unary method with a JSON request; it returns the JSON
// answer.
export async function call(method, body = {}, signal) {
  const resp = await request(SERVICE + method, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal,
  });
  return resp.json();
}

export const getJSON = async (path, signal) => (await request(path, { signal })).json();

// stream calls a server-streaming method: onMessage gets each message as
// it arrives. It resolves when the stream ends well and throws its error
// otherwise (an AbortError when signal aborted it).
export async function stream(method, body, onMessage, signal) {
  const resp = await request(SERVICE + method, {
    method: "POST", headers: { "Content-Type": "application/connect+json" }, body: envelope(body), signal,
  });
  if (!resp.body) throw new ApiError("UNIMPLEMENTED", "this browser cannot read a response as it arrives", 0);
  const reader = resp.body.getReader();
  try {
    for await (const frame of frames(reader)) {
      const msg = JSON.parse(new TextDecoder().decode(frame.data));
      if (frame.flags & 2) return endOfStream(msg);
      onMessage(msg);
    }
  } catch (e) {
    if (e.name === "AbortError" || e instanceof ApiError) throw e;
    connection.lost();
    throw new ApiError("UNAVAILABLE", "the stream was cut (" + e.message + ")", 0);
  }
  throw new ApiError("UNAVAILABLE", "the stream ended without its end message", 0);
}

function endOfStream(msg) {
  if (!msg.error) return;
  const md = msg.metadata || {};
  const code = (md["Spear-Error-Code"] || [])[0] || reasonOf(msg.error);
  const status = msg.error.code === "unauthenticated" ? 401 : 200;
  throw authChecked(new ApiError(code, msg.error.message || msg.error.code, status));
}

// envelope frames a JSON message as Connect's streaming protocol does:
// a flags byte, a 4-byte big-endian length, the message.
function envelope(obj) {
  const data = new TextEncoder().encode(JSON.stringify(obj));
  const out = new Uint8Array(5 + data.length);
  new DataView(out.buffer).setUint32(1, data.length);
  out.set(data, 5);
  return out;
}

// frames yields the enveloped frames read from reader.
async function* frames(reader) {
  let buf = new Uint8Array(0);
  for (;;) {
    while (buf.length >= 5) {
      const n = new DataView(buf.buffer, buf.byteOffset).getUint32(1);
      if (buf.length < 5 + n) break;
      yield { flags: buf[0], data: buf.subarray(5, 5 + n) };
      buf = buf.subarray(5 + n);
    }
    const { value, done } = await reader.read();
    if (done) return;
    const next = new Uint8Array(buf.length + value.length);
    next.set(buf);
    next.set(value, buf.length);
    buf = next;
  }
}

// connection shows a banner while the node does not answer, checks
// /healthz every few seconds meanwhile, and tells the page
// ("spear:reconnected" on window) when it answers again.
export const connection = {
  down: false,
  timer: 0,
  lost() {
    if (this.down) return;
    this.down = true;
    const b = document.getElementById("banner");
    b.textContent = "Connection to the node lost. Reconnecting…";
    b.hidden = false;
    this.timer = setInterval(() => this.probe(), 2000);
  },
  ok() {
    if (!this.down) return;
    this.down = false;
    clearInterval(this.timer);
    document.getElementById("banner").hidden = true;
    window.dispatchEvent(new Event("spear:reconnected"));
  },
  async probe() {
    try {
      await fetch("/healthz", { cache: "no-store" }); // any answer will do: healthy or not, it is there
      this.ok();
    } catch { /* still down */ }
  },
};

// auth opens the token dialog when the node asks for a token; the page
// is loaded again with the new one.
export const auth = {
  prompt(err) {
    const dlg = document.getElementById("token-dialog");
    document.getElementById("token-reason").textContent = err
      ? "The node refused the call: " + err.code + ": " + err.message
      : "Set the token this tab sends to the node.";
    if (!dlg.open) dlg.showModal();
  },
  setup() {
    const dlg = document.getElementById("token-dialog");
    const input = document.getElementById("token-input");
    document.getElementById("token-open").addEventListener("click", () => this.prompt(null));
    document.getElementById("token-close").addEventListener("click", () => dlg.close());
    document.getElementById("token-forget").addEventListener("click", () => { setToken(""); location.reload(); });
    document.getElementById("token-form").addEventListener("submit", (ev) => {
      const t = input.value.trim();
      const bad = /^spear_[A-Za-z0-9_-]{43}$/.test(t) ? "" : "A token is spear_ and 43 characters of A-Z a-z 0-9 _ -.";
      const msg = document.getElementById("token-error");
      msg.textContent = bad;
      msg.hidden = !bad;
      if (bad) { ev.preventDefault(); return; }
      setToken(t);
      location.reload();
    });
  },
};
