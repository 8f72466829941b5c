// output.js: showing a function's output — its first 64 KiB as text or
// hex (a huge output never reaches the page whole), a download link, and
// output arriving chunk by chunk.
import { request, token } from "./api.js";
import { fmtBytes, h } from "./ui.js";

export const SHOW_LIMIT = 64 << 10;

// bytesOf decodes an Any(BytesValue) (or StringValue) output.
export function bytesOf(any) {
  if (!any || any.value === undefined) return new Uint8Array(0);
  if (String(any["@type"]).endsWith("StringValue")) return new TextEncoder().encode(any.value);
  const bin = atob(any.value);
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

const decoder = () => new TextDecoder("utf-8", { fatal: false });

function isText(bytes) {
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(0, Math.max(0, bytes.length - 3)));
  } catch { return false; }
  return !bytes.some((b) => b === 0);
}

export function hexdump(bytes) {
  const out = [];
  for (let off = 0; off < bytes.length; off += 16) {
    const row = bytes.subarray(off, off + 16);
    const hex = Array.from(row, (b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = Array.from(row, (b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join("");
    out.push(off.toString(16).padStart(8, "0") + "  " + hex.padEnd(48) + " |" + ascii + "|");
  }
  return out.join("\n");
}

// outputView shows bytes (the first part of an output of total bytes)
// with a text/hex switch and, given href, a download link.
export function outputView(bytes, total, href) {
  const shown = bytes.subarray(0, SHOW_LIMIT);
  let hex = !isText(shown);
  const pre = h("pre", { class: "out", tabindex: "0", "aria-label": "Output" });
  const toggle = h("button", { type: "button", class: "quiet" });
  const draw = () => {
    pre.textContent = hex ? hexdump(shown) : decoder().decode(shown);
    toggle.textContent = hex ? "Show as text" : "Show as hex";
  };
  toggle.addEventListener("click", () => { hex = !hex; draw(); });
  draw();
  const note = total > shown.length ? `first ${fmtBytes(shown.length)} of ${fmtBytes(total)}` : fmtBytes(total);
  return h("div", {}, h("div", { class: "row" }, h("span", { class: "muted", text: note }), toggle,
    href ? downloadLink(href) : null), pre);
}

// downloadLink links to href; with a token (which a plain link cannot
// send) it fetches the file and saves it.
export function downloadLink(href, name = "output.bin") {
  const a = h("a", { href, download: name, text: "Download" });
  a.addEventListener("click", async (ev) => {
    if (!token()) return;
    ev.preventDefault();
    const blob = await (await request(href)).blob();
    const url = URL.createObjectURL(blob);
    h("a", { href: url, download: name }).click();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  });
  return a;
}

// outputHead reads at most limit bytes of an execution's output from the
// output route and stops; it returns {bytes, total} (total: the whole
// size when the node says it, else what was read).
export async function outputHead(id, limit = SHOW_LIMIT) {
  const ctl = new AbortController();
  const resp = await request(`/api/v1/executions/${encodeURIComponent(id)}/output`, { signal: ctl.signal });
  const reader = resp.body.getReader();
  const parts = [];
  let n = 0;
  while (n < limit) {
    const { value, done } = await reader.read();
    if (done) break;
    parts.push(value);
    n += value.length;
  }
  ctl.abort();
  const bytes = new Uint8Array(n);
  parts.reduce((off, p) => (bytes.set(p, off), off + p.length), 0);
  return { bytes: bytes.subarray(0, limit), total: Number(resp.headers.get("Content-Length")) || n };
}

// liveOutput is a view for output arriving in chunks: it shows the first
// SHOW_LIMIT bytes as text and counts the rest.
export function liveOutput() {
  const pre = h("pre", { class: "out", tabindex: "0", "aria-label": "Live output", "aria-live": "polite" });
  const count = h("span", { class: "muted", text: "waiting for output…" });
  const dec = decoder();
  let shown = 0;
  let chunks = 0;
  let bytes = 0;
  const add = (data) => {
    chunks++;
    bytes += data.length;
    if (shown < SHOW_LIMIT) {
      const part = data.subarray(0, SHOW_LIMIT - shown);
      pre.append(dec.decode(part, { stream: true }));
      shown += part.length;
    }
    count.textContent = `${chunks} chunks, ${fmtBytes(bytes)}` + (bytes > shown ? ` (first ${fmtBytes(shown)} shown)` : "");
  };
  return { el: h("div", {}, count, pre), add, chunks: () => chunks };
}
