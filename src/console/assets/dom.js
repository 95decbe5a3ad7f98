// DOM helpers: every node is made with createElement / createElementNS and every
// piece of data goes in with textContent (or a DOM property), never as HTML, so a
// payload, URL or description is always shown as text. Charts are small inline SVGs
// built the same way (allowed by the CSP: no inline script or style attribute).

const SVG = "http://www.w3.org/2000/svg";

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function assign(node, attrs) {
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "value" || name === "checked" || name === "disabled" || name === "hidden") {
      node[name] = value;
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  return node;
}

/** An HTML element: `el("a", {href: "#/x", class: "btn"}, "text", child, …)`. */
export function el(tag, attrs, ...children) {
  return append(assign(document.createElement(tag), attrs), children);
}

/** An SVG element. */
export function svg(tag, attrs, ...children) {
  return append(assign(document.createElementNS(SVG, tag), attrs), children);
}

/** Replaces the children of `node`. */
export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

/** `2026-06-07 12:00:05` (local time) for an RFC 3339 string; "—" for none. */
export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** A `<dl>` of [label, value] pairs. */
export function facts(pairs) {
  return el("dl", { class: "facts" }, pairs.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "—")]));
}

/** A status word as a coloured badge. */
export function badge(status) {
  return el("span", { class: `badge badge-${String(status).replace(/[^a-z_]/g, "")}` }, status);
}

/**
 * A stacked bar chart: `buckets` = [{label, counts: {series_key: n}}], `series` =
 * [{key, label, cls}]. Each bar is one bucket, each segment one series.
 */
export function stackedBars(buckets, series, { title, width = 560, height = 140 } = {}) {
  const pad = { top: 10, right: 8, bottom: 22, left: 30 };
  const innerW = width - pad.left - pad.right;
  const innerH = height - pad.top - pad.bottom;
  const totals = buckets.map((b) => series.reduce((s, x) => s + (b.counts[x.key] ?? 0), 0));
  const max = Math.max(1, ...totals);
  const slot = innerW / Math.max(1, buckets.length);
  const barW = Math.max(2, slot * 0.7);
  const chart = svg("svg", {
    class: "chart",
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": title ?? "chart",
  });
  if (title) chart.append(svg("title", {}, title));
  // Axis: zero line and the maximum.
  chart.append(
    svg("line", { class: "axis", x1: pad.left, y1: pad.top + innerH, x2: width - pad.right, y2: pad.top + innerH }),
    svg("text", { class: "tick", x: pad.left - 4, y: pad.top + 8, "text-anchor": "end" }, String(max)),
    svg("text", { class: "tick", x: pad.left - 4, y: pad.top + innerH, "text-anchor": "end" }, "0"),
  );
  const labelEvery = Math.max(1, Math.ceil(buckets.length / 8));
  buckets.forEach((b, i) => {
    const x = pad.left + i * slot + (slot - barW) / 2;
    let y = pad.top + innerH;
    const group = svg("g", { class: "bar" });
    for (const s of series) {
      const n = b.counts[s.key] ?? 0;
      if (n === 0) continue;
      const h = (n / max) * innerH;
      y -= h;
      group.append(
        svg("rect", { class: s.cls, x: x.toFixed(1), y: y.toFixed(1), width: barW.toFixed(1), height: h.toFixed(1) },
          svg("title", {}, `${b.label}: ${n} ${s.label}`)),
      );
    }
    chart.append(group);
    if (i % labelEvery === 0) {
      chart.append(svg("text", { class: "tick", x: (x + barW / 2).toFixed(1), y: height - 6, "text-anchor": "middle" }, b.label));
    }
  });
  const legend = el("ul", { class: "legend" },
    series.map((s) => el("li", {}, el("span", { class: `swatch ${s.cls}` }), s.label)));
  return el("figure", { class: "chart-box" }, chart, legend);
}

/** A horizontal gauge for a rate in [0, 1] (null = nothing finished yet). */
export function gauge(rate, { width = 160, height = 12 } = {}) {
  const box = svg("svg", { class: "gauge", viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": rate === null ? "no finished deliveries" : `success rate ${Math.round(rate * 100)}%` });
  box.append(svg("rect", { class: "gauge-track", x: 0, y: 0, width, height, rx: 3 }));
  if (rate !== null && rate !== undefined) {
    const cls = rate >= 0.95 ? "good" : rate >= 0.8 ? "fair" : "poor";
    box.append(svg("rect", { class: `gauge-fill ${cls}`, x: 0, y: 0, width: (rate * width).toFixed(1), height, rx: 3 }));
  }
  return box;
}

/**
 * Buckets items by `created_at` into `n` equal slices ending at the newest item and
 * covering at least `minSpan` ms (an hour: 5-minute bars), counting `status` per slice.
 */
export function bucketByTime(items, n = 12, minSpan = 3600_000) {
  const times = items.map((i) => new Date(i.created_at).getTime()).filter((t) => !Number.isNaN(t));
  if (times.length === 0) return [];
  const hi = Math.max(...times) + 1;
  const span = Math.max(minSpan, hi - Math.min(...times));
  const width = span / n;
  const lo = hi - span;
  const buckets = Array.from({ length: n }, (_, i) => ({ start: lo + i * width, counts: {} }));
  for (const item of items) {
    const t = new Date(item.created_at).getTime();
    if (Number.isNaN(t)) continue;
    const b = buckets[Math.min(n - 1, Math.max(0, Math.floor((t - lo) / width)))];
    b.counts[item.status] = (b.counts[item.status] ?? 0) + 1;
  }
  return buckets.map((b) => ({ label: when(new Date(b.start).toISOString()).slice(11, 16), counts: b.counts }));
}
