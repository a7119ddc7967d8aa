// Small formatting helpers shared by the qlora_nb widgets (no dependencies, no network).
export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Number(n), i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${v.toFixed(0)} B` : `${v.toFixed(1)} ${units[i]}`;
}
export function int(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"); }
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}
export const COLORS = {
  quantized_weights: "#2563eb", quant_constants: "#93c5fd", other_weights: "#64748b",
  adapters: "#16a34a", gradients: "#f59e0b", optimizer_states: "#dc2626", activations_and_other: "#a78bfa",
};
export const LABELS = {
  quantized_weights: "quantized weights", quant_constants: "quant. constants", other_weights: "other weights",
  adapters: "adapters", gradients: "gradients", optimizer_states: "optimizer states",
  activations_and_other: "activations & other",
};
// Renders a ledger dict (Ledger.to_event()) into `root`: stats, LoRA table, stacked bar, legend.
export function renderLedger(root, L, title) {
  root.replaceChildren();
  if (!L || !L.components) { root.append(el("div", { class: "qn-muted" }, "no ledger yet")); return; }
  const p = L.params, c = L.components;
  if (title) root.append(el("div", { class: "qn-title" }, title));
  const pct = (100 * (L.trainable_fraction || 0)).toFixed(3);
  root.append(el("div", { class: "qn-row", "data-testid": "param-counts" },
    el("span", { class: "qn-stat" }, "total ", el("b", { "data-testid": "params-total" }, int(p.total))),
    el("span", { class: "qn-stat" }, "trainable ", el("b", { "data-testid": "params-trainable" }, int(p.trainable)), ` (${pct}%)`),
    el("span", { class: "qn-stat" }, "quantized ", el("b", {}, int(p.quantized))),
    L.bits_per_quantized_param ? el("span", { class: "qn-stat" }, "bits/quantized param ",
      el("b", { "data-testid": "bits-per-param" }, L.bits_per_quantized_param.toFixed(3))) : null,
  ));
  if (L.matrices && L.matrices.length) {
    const t = el("table", { class: "qn-table" },
      el("tr", {}, ...["LoRA matrix", "d_in", "d_out", "r", "r·(d_in+d_out)", "×", "params"].map((h) => el("th", {}, h))));
    for (const m of L.matrices) {
      t.append(el("tr", {}, ...[m.name, m.d_in, m.d_out, m.r, int(m.params_each), m.count, int(m.params)].map((v) => el("td", {}, String(v)))));
    }
    root.append(t);
  }
  const keys = Object.keys(LABELS);
  const total = keys.reduce((s, k) => s + (c[k] || 0), 0) || 1;
  const bar = el("div", { class: "qn-bar", "data-testid": "ledger-bar" });
  const legend = el("div", { class: "qn-legend" });
  for (const k of keys) {
    const v = c[k] || 0;
    const label = k === "optimizer_states" && L.optimizer_paged ? "optimizer states (paged)" : LABELS[k];
    bar.append(el("div", { style: `width:${(100 * v) / total}%;background:${COLORS[k]}`, title: `${label}: ${bytes(v)}` }));
    legend.append(el("span", {}, el("span", { class: "qn-swatch", style: `background:${COLORS[k]}` }), `${label} ${bytes(v)}`));
  }
  root.append(bar, legend);
  const saved = L.bf16_weight_bytes - L.weight_bytes;
  root.append(el("div", { class: "qn-muted", style: "margin-top:6px" },
    `base weights ${bytes(L.weight_bytes)} vs ${bytes(L.bf16_weight_bytes)} in 16-bit (${bytes(saved)} saved) · measured: ${L.measured_source}`));
}
