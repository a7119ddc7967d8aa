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
  adapters: "#16a34a", gradients: "#f59e0b", optimizer_states: "#dc2626",
  activations_and_other: "var(--jp-layout-color3, #cbd5e1)",
};
export const LABELS = {
  quantized_weights: "quantized weights", quant_constants: "quant. constants", other_weights: "other weights",
  adapters: "adapters", gradients: "gradients", optimizer_states: "optimizer states",
  activations_and_other: "activations & other",
};
// Keys typed into a widget's slider/text box act on the widget, never on JupyterLab (whose shortcuts
// listen on the document in the bubbling phase: ArrowRight on a slider moved the active cell).
function isolateKeys(root) {
  for (const type of ["keydown", "keyup", "keypress"]) root.addEventListener(type, (e) => e.stopPropagation());
}
// Marks a rendered, live view: the saved fallback's CSS (qlora_nb/views/base.py) hides itself then.
function markLive(root) { root.classList.add("qn-live"); }
// Every widget shows its root through here, so none can forget either: keys stay in the widget, and the
// saved fallback output above it hides itself once this live view is in the page.
export function mount(host, root) {
  isolateKeys(root);
  host.append(root);
  markLive(root);
  return root;
}
// Every model listener a view adds goes through here, and render returns `off`: anywidget calls it when the view
// is removed (a re-render, a reload, a second display closed), so no old view keeps drawing into a detached
// node or holding it alive.
export function listen(model) {
  const added = [];
  const on = (name, fn) => { model.on(name, fn); added.push([name, fn]); };
  const off = () => { for (const [name, fn] of added.splice(0)) model.off(name, fn); };
  return { on, off };
}
// Where a column first leaves the base, in words (the compare widget and the playground say it alike).
export function divergeText(at) { return `differs from ${at === 0 ? "the first token" : `token ${at}`}`; }

const EXACT = ["quantized_weights", "quant_constants", "other_weights", "adapters", "gradients", "optimizer_states"];
// Renders a ledger dict (Ledger.to_event()) into `root`: stats, folded LoRA table, stacked bar, legend.
// The bar's default scale is "model state only" (the exact, tensor-counted parts); "whole process" adds the
// measured residual (runtime + activations), drawn as a quiet hatched segment.
export function renderLedger(root, L, title, opts = {}) {
  root.replaceChildren();
  if (!L || !L.components) { root.append(el("div", { class: "qn-muted" }, "no ledger yet")); return; }
  const p = L.params, c = L.components;
  if (title) {
    const t = el("div", { class: "qn-title" }, title);
    if (opts.live) t.append(" ", el("span", { class: "qn-live-badge", "data-testid": "as-of" }, "live"));
    root.append(t);
  }
  if (opts.asOf) root.append(el("div", { class: "qn-muted qn-asof", "data-testid": "as-of" }, opts.asOf));
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
    const fold = el("details", { class: "qn-fold" }, el("summary", {}, `LoRA matrices (${L.matrices.length} types)`), t);
    if (opts.openTable) fold.open = true;
    root.append(fold);
  }
  const whole = !!opts.wholeProcess;
  const keys = whole ? Object.keys(LABELS) : EXACT;
  const total = keys.reduce((s, k) => s + (c[k] || 0), 0) || 1;
  const bar = el("div", { class: "qn-bar", "data-testid": "ledger-bar", "data-scale": whole ? "process" : "model" });
  const legend = el("div", { class: "qn-legend" });
  for (const k of Object.keys(LABELS)) {
    const v = c[k] || 0;
    let label = k === "optimizer_states" && L.optimizer_paged ? "optimizer states (paged)" : LABELS[k];
    if (k === "activations_and_other") label = "runtime + activations (measured)";
    const cls = k === "activations_and_other" ? "qn-seg qn-seg-quiet" : "qn-seg";
    if (keys.includes(k)) {
      bar.append(el("div", { class: cls, style: `width:${(100 * v) / total}%;background:${COLORS[k]}`, title: `${label}: ${bytes(v)}` }));
    }
    legend.append(el("span", {}, el("span", { class: `qn-swatch ${cls}`, style: `background:${COLORS[k]}` }), `${label} ${bytes(v)}`));
  }
  const toggle = el("button", { class: "qn-btn qn-btn-small", "data-testid": "ledger-scale",
    textContent: whole ? "scale: whole process" : "scale: model state only",
    title: "model state: the exact parts counted from tensors; whole process adds the measured RSS residual" });
  toggle.addEventListener("click", () => renderLedger(root, L, title, { ...opts, wholeProcess: !whole }));
  root.append(el("div", { class: "qn-row" }, el("span", { class: "qn-muted" }, "memory"), toggle), bar, legend);
  const saved = L.bf16_weight_bytes - L.weight_bytes;
  root.append(el("div", { class: "qn-muted", style: "margin-top:6px" },
    `exact (counted from the tensors): weights, constants, adapters, gradients, optimizer states · ` +
    `measured: runtime + activations = ${L.measured_source || "not measured"} minus the exact parts · ` +
    `base weights ${bytes(L.weight_bytes)} vs ${bytes(L.bf16_weight_bytes)} in 16-bit (${bytes(saved)} saved)`));
}

// The lines every prompt shares at its start and end (the template), so each row shows only its own fields.
// Shared by the compare widget and the dashboard's probe rows.
export function sharedTemplate(prompts) {
  if (prompts.length < 2) return { head: [], tail: [] };
  const lines = prompts.map((p) => p.split("\n"));
  const minLen = Math.min(...lines.map((l) => l.length));
  let h = 0;
  while (h < minLen && lines.every((l) => l[h] === lines[0][h])) h++;
  let t = 0;
  while (t < minLen - h && lines.every((l) => l[l.length - 1 - t] === lines[0][lines[0].length - 1 - t])) t++;
  // a row must keep something of its own
  if (lines.some((l) => l.length - h - t <= 0)) return { head: [], tail: [] };
  return { head: lines[0].slice(0, h), tail: t ? lines[0].slice(lines[0].length - t) : [] };
}
// A prompt without the shared template's lines: the row's own input.
export function ownPart(prompt, tpl) {
  if (!tpl.head.length && !tpl.tail.length) return prompt;
  const l = prompt.split("\n");
  return l.slice(tpl.head.length, l.length - tpl.tail.length).join("\n").trim();
}
