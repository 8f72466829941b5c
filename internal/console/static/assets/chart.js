// chart.js: two small SVG charts — lines over time and a histogram.

const NS = "http://www.w3.org/2000/svg";
const W = 600;
const H = 180;
const PAD = { l: 56, r: 8, t: 10, b: 24 };

function el(tag, attrs = {}, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// niceMax rounds v up to 1, 2 or 5 times a power of ten.
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  return [1, 2, 5, 10].map((m) => m * p).find((m) => m >= v);
}

function frame(label, max, fmt) {
  const svg = el("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label });
  svg.append(el("title", {}, label));
  for (const f of [0, 0.5, 1]) {
    const y = PAD.t + (1 - f) * (H - PAD.t - PAD.b);
    svg.append(el("line", { class: "grid-line", x1: PAD.l, x2: W - PAD.r, y1: y, y2: y }));
    svg.append(el("text", { x: PAD.l - 6, y: y + 4, "text-anchor": "end" }, fmt(max * f)));
  }
  return svg;
}

const hhmm = (ms) => new Date(ms).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });

// lines draws series ([{values}], as many values as times) over times
// (Unix ms); fmt formats the y axis. label describes it for screen
// readers.
export function lines(label, times, series, fmt = String) {
  const max = niceMax(Math.max(...series.flatMap((s) => s.values)));
  const svg = frame(label, max, fmt);
  const x = (i) => PAD.l + (i / Math.max(times.length - 1, 1)) * (W - PAD.l - PAD.r);
  const y = (v) => PAD.t + (1 - v / max) * (H - PAD.t - PAD.b);
  series.forEach((s, k) => {
    const pts = s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    svg.append(el("polyline", { class: "s" + k, points: pts }));
  });
  for (const i of [0, Math.floor((times.length - 1) / 2), times.length - 1]) {
    if (times[i] !== undefined) svg.append(el("text", { x: x(i), y: H - 6, "text-anchor": "middle" }, hhmm(times[i])));
  }
  return svg;
}

// bars draws a histogram of bins ([{label, count}]).
export function bars(label, bins) {
  const max = niceMax(Math.max(...bins.map((b) => b.count)));
  const svg = frame(label, max, (v) => (Number.isInteger(v) ? String(v) : ""));
  const bw = (W - PAD.l - PAD.r) / Math.max(bins.length, 1);
  bins.forEach((b, i) => {
    const hgt = (b.count / max) * (H - PAD.t - PAD.b);
    const r = el("rect", { class: "bar", x: PAD.l + i * bw + 2, y: H - PAD.b - hgt, width: Math.max(bw - 4, 1), height: hgt });
    r.append(el("title", {}, `${b.label}: ${b.count}`));
    svg.append(r);
    if (bins.length <= 12 || i % 2 === 0) {
      svg.append(el("text", { x: PAD.l + (i + 0.5) * bw, y: H - 6, "text-anchor": "middle" }, b.label));
    }
  });
  return svg;
}
