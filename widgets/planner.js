// Memory planner widget. The arithmetic is a line-by-line port of qlora_nb/memory/planner.py + formulas.py
// so sliders re-plan in the browser without a kernel round-trip (tests compare both on a grid via node).
import { el, bytes, mount, listen } from "./format.js";

const DT = { bfloat16: 2, float16: 2, float32: 4, auto: 2 };  // auto: bfloat16 or float16, 2 bytes either way
const PLAN_KEYS = ["quantized_weights", "quant_constants", "other_weights", "adapters", "gradients",
  "optimizer_states", "activations", "logits", "overhead"];
const PCOLORS = {
  quantized_weights: "#2563eb", quant_constants: "#93c5fd", other_weights: "#64748b", adapters: "#16a34a",
  gradients: "#f59e0b", optimizer_states: "#dc2626", activations: "#a78bfa", logits: "#e879f9", overhead: "#cbd5e1",
  ddp_buckets: "#fcd34d", fsdp_gathered: "#0ea5e9",
};
// memory/multi_device.py: what one of N devices holds (DDP replicates + its gradient buckets; FSDP shards)
const SHARDED = ["quantized_weights", "quant_constants", "other_weights", "adapters", "gradients", "optimizer_states"];
export function perDevice(a, o, c) {
  const n = Number(o.gpus || 1), out = { ...c };
  if (o.strategy !== "fsdp") { if (n > 1) out.ddp_buckets = c.gradients; return out; }
  const root = (a.vocab * a.hidden * (a.tied ? 1 : 2) + a.hidden) * DT[o.compute_dtype || "bfloat16"];
  const unit = Math.floor((c.quantized_weights + c.quant_constants + c.other_weights - root + c.adapters) / Math.max(1, a.layers));
  const gathered = root + 2 * unit;
  if (o.cpu_offload) { for (const k of SHARDED) out[k] = 0; out.fsdp_gathered = gathered; }
  else { for (const k of SHARDED) out[k] = Math.ceil(c[k] / n); out.fsdp_gathered = Math.floor((gathered * (n - 1)) / n); }
  return out;
}

export function linears(a) {
  const h = a.hidden, i = a.intermediate, n = a.layers, q = a.heads * a.head_dim, kv = a.kv_heads * a.head_dim;
  const L = (name, d_in, d_out, bias = false) => ({ name, d_in, d_out, count: n, bias });
  if (a.fused_qkv) return [L("qkv_proj", h, q + 2 * kv, a.qkv_bias), L("o_proj", q, h), L("gate_up_proj", h, 2 * i), L("down_proj", i, h)];
  return [L("q_proj", h, q, a.qkv_bias), L("k_proj", h, kv, a.qkv_bias), L("v_proj", h, kv, a.qkv_bias), L("o_proj", q, h),
    L("gate_proj", h, i), L("up_proj", h, i), L("down_proj", i, h)];
}
const ceil = Math.ceil;
function const4(n, dq) {
  const blocks = ceil(n / 64);
  return dq ? blocks + 4 + ceil(blocks / 256) * 4 + 256 * 4 + 64 : blocks * 4 + 64;
}
const adamw = (n) => 8 * n + 4;
const adamw8 = (n) => (n < 4096 ? 8 * n : 2 * n + 2 * ceil(n / 256) * 4);
// The planner's context check (memory/planner.py context_warnings): "" when seq_len fits or the context is unknown.
export function contextWarning(a, o) {
  const ctx = a.context || a.max_position_embeddings || 0;
  return ctx && o.seq_len > ctx ? `seq_len ${o.seq_len} exceeds ${o.model}'s context of ${ctx} tokens.` : "";
}
export function baseBits(o) { return o.bits ? o.bits : (o.method === "qlora" ? 4 : 16); }

export function components(a, o, K) {
  const bits = baseBits(o), cd = DT[o.compute_dtype || "bfloat16"], specs = linears(a);
  const c = Object.fromEntries(PLAN_KEYS.map((k) => [k, 0]));
  let quantized = 0;
  for (const s of specs) {
    const n = s.d_in * s.d_out;
    if (bits === 4) { c.quantized_weights += Math.floor((n + 1) / 2) * s.count; c.quant_constants += const4(n, o.double_quant) * s.count; quantized += n * s.count; }
    else if (bits === 8) { c.quantized_weights += n * s.count; c.quant_constants += s.d_out * 4 * s.count; quantized += n * s.count; }
    else c.other_weights += n * cd * s.count;
    if (s.bias) c.other_weights += s.d_out * cd * s.count;
  }
  const emb = a.vocab * a.hidden * (a.tied ? 1 : 2);
  const norms = a.layers * (a.norms_per_layer * a.hidden + (a.qk_norm ? 2 * a.head_dim : 0)) + a.hidden;
  c.other_weights += (emb + norms + (a.scalar_buffers || 0)) * cd + a.rotary_embeddings * 2 * Math.floor(a.head_dim / 2) * 4;
  const full = o.method === "full";
  const all = (o.targets || ["all-linear"]).length === 1 && (o.targets || ["all-linear"])[0] === "all-linear";
  const mats = full ? [] : specs.filter((s) => all || o.targets.includes(s.name));
  const tensors = [];
  if (full) {
    for (const s of specs) { tensors.push([s.d_in * s.d_out, s.count]); if (s.bias) tensors.push([s.d_out, s.count]); }
    tensors.push([a.vocab * a.hidden, a.tied ? 1 : 2], [a.hidden, a.layers * a.norms_per_layer + 1]);
    if (a.qk_norm) tensors.push([a.head_dim, 2 * a.layers]);
  } else {
    for (const m of mats) { tensors.push([o.r * m.d_in, m.count], [m.d_out * o.r, m.count]); if (o.dora) tensors.push([m.d_out, m.count]); }
  }
  const trainable = tensors.reduce((t, [n, k]) => t + n * k, 0);
  if (full) c.gradients = trainable * cd; else { c.adapters = trainable * 4; c.gradients = trainable * 4; }
  const eight = o.optimizer === "adamw_8bit" || o.optimizer === "paged_adamw_8bit";
  for (const [n, k] of tensors) c.optimizer_states += (eight ? adamw8(n) : adamw(n)) * k;
  const h = a.hidden, qd = a.heads * a.head_dim, kvd = a.kv_heads * a.head_dim, cpu = o.device === "cpu";
  let per = a.norms_per_layer * (4 * h + 4) + cd * (2 * qd + 2 * kvd) + 4 * a.heads + 3 * cd * a.intermediate;
  if (!full) {
    const perIn = 4 + (o.dropout > 0 ? (cpu ? 4 : 1) : 0);
    let lora = 0;
    for (const m of mats) lora += (perIn * m.d_in + 4 * o.r) * m.count;
    per += Math.floor(lora / a.layers);
  } else per += cd * (h + qd + h + a.intermediate);
  const tokens = o.batch_size * o.seq_len;
  if (cpu) {  // the RSS fit (memory/planner.py)
    const act = o.gradient_checkpointing ? tokens * (a.layers * cd * h + 2 * per) : tokens * (a.layers + 1) * per;
    c.activations = Math.floor(act * K.cpu_act_scale);
    c.logits = tokens * a.vocab * (cd + 4 * K.logit_fp32_copies);
    c.overhead = K.cpu_runtime_bytes;
  } else {  // what CUDA keeps (memory/cuda_peak.py dynamic_peak, the pinned stack)
    const back = Math.max(3 * cd * a.intermediate, cd * (qd + 2 * kvd) + 4 * qd) + 2 * cd * h;
    const kept = o.gradient_checkpointing ? tokens * a.layers * cd * h : tokens * a.layers * per;
    const inLayer = o.gradient_checkpointing ? tokens * (per + back) : tokens * back;
    const deq = bits >= 16 ? 0 : Math.max(...specs.map((s) => s.d_in * s.d_out)) * cd;
    const loss = [kept + tokens * cd * h, tokens * a.vocab * K.logit_peak];
    const layer = [kept + inLayer + deq, tokens * a.vocab * K.logit_held];
    [c.activations, c.logits] = layer[0] + layer[1] > loss[0] + loss[1] ? layer : loss;
    c.overhead = K.cuda_context_bytes + Math.floor(K.reserve * c.activations) + K.allocator_cache_bytes;
  }
  return { components: perDevice(a, o, c), trainable, quantized };
}
const total = (c) => Object.values(c).reduce((t, v) => t + v, 0);

export function changes(o) {
  const out = [];
  if (!o.gradient_checkpointing) out.push(["turn on gradient checkpointing", { gradient_checkpointing: true }]);
  if (!o.optimizer.includes("8bit")) out.push(["use the paged_adamw_8bit optimizer", { optimizer: "paged_adamw_8bit" }]);
  for (let b = Math.floor(o.batch_size / 2); b >= 1; b = Math.floor(b / 2))
    out.push([`batch_size ${b} (gradient_accumulation_steps ${ceil(o.batch_size / b)} keeps the effective batch)`, { batch_size: b }]);
  for (let s = Math.floor(o.seq_len / 2); s >= 64; s = Math.floor(s / 2)) out.push([`seq_len ${s}`, { seq_len: s }]);
  if (o.method === "full") out.push(["switch to lora (frozen 16-bit base)", { method: "lora", bits: null }]);
  if (o.method !== "qlora" && baseBits(o) !== 4) out.push(["switch to qlora (4-bit NF4 base)", { method: "qlora", bits: null, quant: "nf4" }]);
  if (baseBits(o) === 4 && !o.double_quant) out.push(["turn on double quantization", { double_quant: true }]);
  for (let r = Math.floor(o.r / 2); o.method !== "full" && r >= 1; r = Math.floor(r / 2)) out.push([`r ${r}`, { r }]);
  // more devices or offload: last, as they need hardware rather than a setting
  if (o.strategy === "fsdp" && !o.cpu_offload) out.push(["add CPU offload", { cpu_offload: true }]);
  if (o.strategy !== "fsdp") {
    const n = Math.max(2, Number(o.gpus || 1));
    out.push([`${n} GPUs with FSDP`, { gpus: n, strategy: "fsdp" }]);
    out.push([`${n} GPUs with FSDP and CPU offload`, { gpus: n, strategy: "fsdp", cpu_offload: true }]);
  }
  return out;
}

export function plan(a, o, K, limit) {
  const res = components(a, o, K), t = total(res.components);
  const verdict = t <= K.tight * limit ? "fits" : t <= limit ? "tight" : "won't fit";
  const [bigK, bigV] = Object.keys(res.components).map((k) => [k, res.components[k]]).reduce((m, x) => (x[1] > m[1] ? x : m));
  const used = `${bytes(t)} of ${bytes(limit)}`, big = `biggest component: ${bigK.replace(/_/g, " ")} (${bytes(bigV)})`;
  let reason = `${used}; ${big}.`;
  let fix = null, fixDelta = null;
  if (verdict !== "fits") {
    const offloaded = (opts) => {  // memory/planner.py offloaded_bytes: the shards in host RAM
      const w = components(a, { ...opts, gpus: 1, strategy: "ddp", cpu_offload: false }, K).components;
      return SHARDED.reduce((t, k) => t + w[k], 0);
    };
    const fits = (opts) => !(opts.cpu_offload && offloaded(opts) > K.offload_host_bytes)
      && total(components(a, opts, K).components) <= K.tight * limit;
    const ch = changes(o);
    for (const [text, d] of ch) if (fits({ ...o, ...d })) { fix = text; fixDelta = d; break; }
    if (fix === null) {
      let acc = { ...o }; let applied = new Map();
      for (const [text, d] of ch) {
        acc = { ...acc, ...d }; applied.set(Object.keys(d).sort().join(","), [text, d]);
        if (fits(acc)) {
          for (const key of [...applied.keys()].reverse()) {  // drop what is not needed, most expensive first
            const trial = new Map([...applied].filter(([k]) => k !== key));
            const merged = Object.assign({}, ...[...trial.values()].map(([, dd]) => dd));
            if (fits({ ...o, ...merged })) applied = trial;
          }
          fix = [...applied.values()].map(([t]) => t).join(" + ");
          fixDelta = Object.assign({}, ...[...applied.values()].map(([, dd]) => dd)); break;
        }
      }
    }
    reason = fix === null
      ? `${used}; ${big}; nothing in the search fits (checkpointing, 8-bit optimizer, batch, FSDP, offload, seq_len, qlora, r) — it needs more memory.`
      : `${used}; ${big}; cheapest change that fits: ${fix}.`;
  }
  return { ...res, total: t, verdict, reason, fix, fixDelta: verdict === "fits" ? null : fixDelta };
}

const GiB = 2 ** 30;
const STYLE = `.qn-planner .qn-controls{display:grid;grid-template-columns:repeat(auto-fill,minmax(230px,1fr));gap:4px 12px;margin:6px 0}
.qn-planner .qn-ctl{display:flex;gap:6px;align-items:center}.qn-planner .qn-ctl>span{min-width:92px;color:var(--jp-ui-font-color2,#555)}
.qn-planner .qn-ctl.qn-off{opacity:.45}
.qn-planner .qn-verdict{margin:6px 0;padding:4px 8px;border-radius:4px;color:var(--jp-ui-font-color0,#111);border-left:4px solid transparent}
.qn-planner .qn-fits{background:color-mix(in srgb,var(--jp-success-color1,#16a34a) 20%,transparent);border-left-color:var(--jp-success-color1,#16a34a)}
.qn-planner .qn-tight{background:color-mix(in srgb,var(--jp-warn-color1,#ca8a04) 20%,transparent);border-left-color:var(--jp-warn-color1,#ca8a04)}
.qn-planner .qn-wontfit{background:color-mix(in srgb,var(--jp-error-color1,#dc2626) 20%,transparent);border-left-color:var(--jp-error-color1,#dc2626)}
.qn-planner .qn-warn{color:var(--jp-warn-color1,#b45309)}
.qn-planner .qn-cmp-row{display:flex;align-items:center;gap:8px;margin:3px 0}.qn-planner .qn-cmp-label{width:170px}
.qn-planner .qn-cmp-track{position:relative;flex:1;height:16px}.qn-planner .qn-cmp-track .qn-bar{height:16px;margin:0}
.qn-planner .qn-limit{position:absolute;top:-3px;bottom:-3px;width:2px;background:var(--jp-ui-font-color0,#111)}.qn-planner .qn-cmp-total{width:80px;text-align:right}
.qn-planner .qn-over{border-right:4px dashed var(--jp-ui-font-color0,#111)}.qn-planner .qn-limit-key{background:var(--jp-ui-font-color0,#111);width:3px}`;
function control(label, input) { return el("label", { class: "qn-ctl" }, el("span", {}, label), input); }

function render({ model, el: host }) {
  const root = el("div", { class: "qn-card qn-planner", "data-testid": "qlora-planner" });
  mount(host, root);
  const { off } = listen(model);  // no model listeners (it redraws from its own inputs); render still returns it
  const archs = model.get("archs"), K = model.get("constants");
  const C = model.get("choices");  // method / quant / optimizer / strategy choices, from PlanConfig's declarations
  const state = { ...model.get("options") };
  build();
  // (re)builds the controls from `state`: after "apply" every control shows the applied option
  function build(focusApply = false) {
    root.replaceChildren(el("style", {}, STYLE));
    const custom = model.get("arch");
    const archOf = (name) => archs[name] || custom;
    const select = (key, values) => {
      const s = el("select", { "data-testid": `plan-${key}` });
      for (const v of values) s.append(el("option", { value: String(v), selected: String(state[key]) === String(v) }, String(v)));
      s.onchange = () => { state[key] = s.value; update(); };
      return s;
    };
    const numberSelect = (key, values) => {
      const s = select(key, values.includes(Number(state[key])) ? values : [...values, Number(state[key])]);
      s.onchange = () => { state[key] = Number(s.value); update(); };
      return s;
    };
    const range = (key, values, fmt = String) => {
      const idx = Math.max(0, values.findIndex((v) => v >= state[key]));
      const r = el("input", { type: "range", min: 0, max: values.length - 1, step: 1, value: idx, "data-testid": `plan-${key}` });
      const out = el("b", {}, fmt(state[key]));
      r.oninput = () => { state[key] = values[Number(r.value)]; out.textContent = fmt(state[key]); update(); };
      return el("span", {}, r, " ", out);
    };
    const check = (key) => {
      const c = el("input", { type: "checkbox", checked: !!state[key], "data-testid": `plan-${key}` });
      c.onchange = () => { state[key] = c.checked; update(); };
      return c;
    };
    const names = Object.keys(archs);
    if (custom && !archs[state.model]) names.unshift(state.model);
    const pow2 = (lo, hi) => { const v = []; for (let x = lo; x <= hi; x *= 2) v.push(x); return v; };
    const gpus = [4, 6, 8, 12, 16, 24, 32, 40, 48, 64, 80, 94, 141, 192];
    state.gpu_gib = state.gpu_gib || Math.round(model.get("limit_bytes") / GiB);
    const controls = el("div", { class: "qn-controls" },
      control("model", select("model", names)),
      control("memory (GiB)", range("gpu_gib", gpus.includes(state.gpu_gib) ? gpus : [...gpus, state.gpu_gib].sort((x, y) => x - y))),
      control("method", select("method", C.method)),
      control("quant", select("quant", C.quant)),
      control("double quant", check("double_quant")),
      control("r", range("r", pow2(1, 512))),
      control("seq_len", range("seq_len", pow2(64, 32768))),
      control("batch", range("batch_size", pow2(1, 128))),
      control("checkpointing", check("gradient_checkpointing")),
      control("optimizer", select("optimizer", C.optimizer)),
      control("GPUs", numberSelect("gpus", [1, 2, 3, 4, 8])),
      control("strategy", select("strategy", C.strategy)),
      control("CPU offload", check("cpu_offload")),
    );
    // controls that do not apply to the chosen method are disabled (quantization only for QLoRA, r not for full)
    const applies = { quant: (o) => o.method === "qlora", double_quant: (o) => o.method === "qlora", r: (o) => o.method !== "full",
      cpu_offload: (o) => o.strategy === "fsdp" };
    const warning = el("div", { class: "qn-warn", "data-testid": "plan-warning" });
    const verdict = el("div", { class: "qn-verdict", "data-testid": "plan-verdict", tabIndex: -1 });
    const fixRow = el("div", { class: "qn-row", "data-testid": "plan-fix" });
    const table = el("div", { "data-testid": "plan-components" });
    const compare = el("div", { class: "qn-compare", "data-testid": "plan-compare" });
    const timeBox = el("div", { "data-testid": "plan-time" });
    root.append(el("div", { class: "qn-title" }, "Will it fit? — memory planner"), controls, warning, verdict, fixRow, timeBox, table, compare);
    drawTime(timeBox, model.get("forecast"), (d) => { Object.assign(state, d); build(true); });

    function stackedBar(label, comps, limit, scaleMax) {
      const t = total(comps);
      const over = t > scaleMax;  // beyond the scale: clipped at the right edge and labelled with its size
      const bar = el("div", { class: over ? "qn-bar qn-over" : "qn-bar", style: `width:${Math.min(100, (100 * t) / scaleMax)}%` });
      for (const k of Object.keys(comps)) bar.append(el("div", { style: `width:${(100 * comps[k]) / (t || 1)}%;background:${PCOLORS[k]}`, title: `${k}: ${bytes(comps[k])}` }));
      const line = el("div", { class: "qn-limit", style: `left:${(100 * limit) / scaleMax}%`, title: `memory ${bytes(limit)}` });
      return el("div", { class: "qn-cmp-row" }, el("span", { class: "qn-cmp-label" }, label),
        el("div", { class: "qn-cmp-track" }, bar, line), el("span", { class: "qn-cmp-total" }, over ? `▸ ${bytes(t)}` : bytes(t)));
    }

    function update() {
      const o = { ...state, r: Number(state.r), seq_len: Number(state.seq_len), batch_size: Number(state.batch_size) };
      if (o.method === "full") o.bits = null;
      if (o.method === "lora" && o.bits === 4) o.bits = null;
      if (o.strategy !== "fsdp" && o.cpu_offload) { o.cpu_offload = false; state.cpu_offload = false; }  // offload is FSDP's
      const a = archOf(o.model), limit = o.gpu_gib * GiB;
      for (const [key, ok] of Object.entries(applies)) {
        for (const input of controls.querySelectorAll(`[data-testid="plan-${key}"]`)) {
          input.disabled = !ok(o);
          input.closest(".qn-ctl").classList.toggle("qn-off", !ok(o));
        }
      }
      warning.textContent = contextWarning(a, o);
      const p = plan(a, o, K, limit);
      verdict.className = `qn-verdict qn-${p.verdict.replace(/[^a-z]/g, "")}`;
      const per = Number(o.gpus || 1) > 1 || o.strategy === "fsdp" ? ` (one of ${o.gpus} devices, ${o.strategy}${o.cpu_offload ? " + CPU offload" : ""})` : "";
      verdict.replaceChildren(el("b", {}, p.verdict), per, " — ", p.reason);
      const measured = model.get("measured") || {};
      const rows = [el("tr", {}, ...["component", "predicted", ...(Object.keys(measured).length ? ["measured"] : [])].map((x) => el("th", {}, x)))];
      for (const k of Object.keys(p.components)) rows.push(el("tr", {}, el("td", {}, k.replace(/_/g, " ")), el("td", {}, bytes(p.components[k])),
        ...(Object.keys(measured).length ? [el("td", {}, k in measured ? bytes(measured[k]) : "")] : [])));
      rows.push(el("tr", {}, el("td", {}, el("b", {}, "total")), el("td", {}, el("b", {}, bytes(p.total)))));
      table.replaceChildren(el("table", { class: "qn-table" }, ...rows),
        el("div", { class: "qn-muted" }, `${p.trainable.toLocaleString("en-US")} trainable parameters` +
          (Object.keys(measured).length ? " · measured: the loaded session's ledger"
            : " · no measured column: this plan is for a model that is not loaded (plan the loaded session with %qlora_plan and no MODEL to compare)")));
      const variants = [
        ["full (16-bit)", { method: "full", bits: null }], ["LoRA r=16 (16-bit base)", { method: "lora", bits: null, r: 16 }],
        ["QLoRA NF4 r=16", { method: "qlora", bits: null, quant: "nf4", double_quant: false, r: 16 }],
        ["QLoRA NF4+DQ r=16", { method: "qlora", bits: null, quant: "nf4", double_quant: true, r: 16 }],
      ].map(([label, d]) => [label, components(a, { ...o, ...d }, K).components]);
      // the scale fits the memory line and the bars up to twice it: QLoRA stays legible next to a 16-bit
      // full fine-tune many times larger (that bar is clipped and says so)
      const totals = variants.map(([, c]) => total(c));
      const scaleMax = Math.max(limit * 1.15, ...totals.filter((t) => t <= 2 * limit));
      const legend = el("div", { class: "qn-legend", "data-testid": "plan-legend" },
        ...PLAN_KEYS.map((k) => el("span", {}, el("span", { class: "qn-swatch", style: `background:${PCOLORS[k]}` }), k.replace(/_/g, " "))),
        el("span", {}, el("span", { class: "qn-swatch qn-limit-key" }), `memory limit ${bytes(limit)}`));
      compare.replaceChildren(el("div", { class: "qn-muted" }, "full / LoRA / QLoRA at these settings (scale: up to twice the memory; ▸ = beyond it)"),
        ...variants.map(([label, c]) => stackedBar(label, c, limit, scaleMax)), legend);
      fixRow.replaceChildren();
      if (p.fixDelta) {
        const apply = el("button", { class: "qn-btn", "data-testid": "plan-apply-fix", textContent: `apply: ${p.fix}` });
        apply.addEventListener("click", () => {
          const d = { ...p.fixDelta };
          if (d.method) delete d.bits;
          Object.assign(state, d);
          build(true);
        });
        fixRow.append(apply);
      }
      model.set("options", { ...state });
      model.save_changes();
    }
    update();
    if (focusApply) (root.querySelector('[data-testid="plan-apply-fix"]') || root.querySelector('[data-testid="plan-verdict"]')).focus?.();
  }
  return off;
}
const secs = (s) => (s === null || s === undefined ? "–" : s < 120 ? `${s.toFixed(2)} s` : s < 7200 ? `${(s / 60).toFixed(1)} min` : `${(s / 3600).toFixed(1)} h`);

// time next to memory, as priced in Python for the options the plan was made with (the sliders re-plan memory only)
function drawTime(box, f, apply) {
  box.replaceChildren();
  if (!f || !f.step_seconds) return;
  const est = f.source === "estimated" ? ", estimated from published peaks" : "";
  const sure = f.certainty || `±${Math.round(100 * f.uncertainty)}%${est}`;  // how sure, worded in Python
  box.append(el("div", { class: "qn-muted" }, `time (as planned; run %qlora_plan again after changes): `,
    el("b", { "data-testid": "plan-step-seconds" }, secs(f.step_seconds)), ` per step (${sure}), run `,
    el("b", {}, f.run_seconds ? secs(f.run_seconds) : "–"), ` — ${f.run_note}`));
  const rows = [el("tr", {}, el("th", {}, "setup"), el("th", {}, "s/step"), el("th", {}, "memory"), el("th", {}, "verdict"),
    ...(f.measured && f.measured.length ? [el("th", {}, "measured")] : []))];
  for (const m of f.methods || []) {
    const meas = (f.measured || []).find((x) => x.method === m.method && x.bits === m.bits);
    rows.push(el("tr", {}, el("td", {}, m.label), el("td", {}, secs(m.step_seconds)), el("td", {}, bytes(m.memory_bytes)), el("td", {}, m.verdict),
      ...(f.measured && f.measured.length ? [el("td", {}, meas ? (meas.step_seconds ? secs(meas.step_seconds) + (meas.flag ? ` (!) ${meas.flag}` : "") : meas.why || "") : "")] : [])));
  }
  box.append(el("table", { class: "qn-table", "data-testid": "plan-time-table" }, ...rows));
  if (f.fastest) {
    const b = el("button", { class: "qn-btn", "data-testid": "plan-apply-fastest", textContent: `apply fastest: ${f.fastest.text}` });
    b.addEventListener("click", () => apply({ method: f.fastest.method, bits: f.fastest.method === "qlora" ? null : f.fastest.bits,
      batch_size: f.fastest.batch_size, gradient_checkpointing: f.fastest.gradient_checkpointing }));
    box.append(el("div", { class: "qn-row" }, b, ` ${secs(f.fastest.step_seconds)} per step`));
  } else box.append(el("div", { class: "qn-muted" }, `fastest that fits: ${f.fastest_note}`));
}
export default { render };
