// Training dashboard card: title, status and Stop; the loss chart (first, at the card's width); the phase
// or progress line; the numbers; probe generations; the memory ledger (LoRA table folded).
// Everything is drawn from synced traits, so a reloaded page (kernel idle) redraws the same state.
import { el, renderLedger, sharedTemplate, ownPart, mount, listen } from "./format.js";
import { lossChart, metricChart } from "./chart.js";

function eta(s) {
  if (s === null || s === undefined || !(s >= 0)) return "–";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const mm = h ? String(m).padStart(2, "0") : String(m);
  return (h ? `${h}:` : "") + `${mm}:${String(sec).padStart(2, "0")}`;
}
const num = (v, digits = 4) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
const rate = (v) => (v ? Math.round(v).toLocaleString("en-US") : "–");
function lrText(p) {
  if (p.learning_rate === null || p.learning_rate === undefined) return "–";
  const v = Number(p.learning_rate).toExponential(2);
  return p.warmup ? `${v} (warm-up)` : v;
}

// Stop: enabled while a run is active and not yet asked to stop; hidden once the run has ended.
// Without live Stop (no kernel subshells) the click is only seen after the cell ends: say "use Interrupt".
export function stopState(status, clicked, stopLive) {
  const active = status === "running" || status === "waiting";
  return {
    hidden: !active && status !== "stopping",
    disabled: !active || clicked,
    hint: !active ? "" : stopLive ? "stop at the next step and save a checkpoint"
      : "this kernel sees Stop only after the cell ends: use Interrupt (■ in the toolbar / Kernel → Interrupt) to stop now",
  };
}

// The probe rows of the latest evaluation, in the compare widget's terms: the input (the template shared by
// the prompts folded away as there, else the engine's `input`: the row's own fields), then one column per
// model named as there ("base", the adapter's name). An output that stopped at max_new_tokens, not at EOS,
// ends with a visible "… (cut at N tokens)".
export function probeTable(rows) {
  if (!rows.length) return null;
  const last = rows[rows.length - 1].step;
  const now = rows.filter((x) => x.step === last);
  const tpl = sharedTemplate(now.map((r) => r.prompt || ""));
  const folded = tpl.head.length || tpl.tail.length;
  const adapter = now[0].adapter || "adapter";
  const t = el("table", { class: "qn-table qn-probes", "data-testid": "probe-table" },
    el("tr", {}, el("th", {}, `input (probes @ step ${last})`), el("th", {}, "base"), el("th", {}, adapter)));
  const cell = (r, key) => {
    const td = el("td", { class: "qn-gen", "data-column": key === "adapted" ? adapter : "base" }, r[key] ?? "");
    if ((r.truncated || {})[key]) {
      td.append(el("span", { class: "qn-muted qn-cut", "data-testid": "probe-truncated" },
        ` … (cut at ${r.max_new_tokens} tokens)`));
    }
    return td;
  };
  for (const r of now) {
    const input = folded ? ownPart(r.prompt || "", tpl) : (r.input ?? r.prompt ?? "");
    t.append(el("tr", { "data-testid": "probe-row" },
      el("td", { class: "qn-prompt", "data-testid": "probe-input", title: r.prompt || "" }, input),
      cell(r, "base"), cell(r, "adapted")));
  }
  return t;
}

function mib(b) {
  return b == null ? "–" : `${(b / 2 ** 20).toFixed(0)} MiB`;
}

// %qlora_launch: each rank's latest memory report ([{rank, rss, gpu_peak?}]); null when not a launched run
export function rankTable(rows) {
  if (!rows || !rows.length) return null;
  const gpu = rows.some((r) => r.gpu_peak != null);
  const head = el("tr", {}, el("th", {}, "rank"), el("th", {}, "RSS"), ...(gpu ? [el("th", {}, "GPU peak")] : []));
  return el("table", { class: "qn-table qn-ranks", "data-testid": "rank-memory" }, head,
    ...rows.map((r) => el("tr", { "data-rank": String(r.rank) }, el("td", {}, String(r.rank)),
      el("td", {}, mib(r.rss)), ...(gpu ? [el("td", {}, mib(r.gpu_peak))] : []))));
}

function render({ model, el: host }) {
  const root = el("div", { class: "qn-card qn-dashboard", "data-testid": "qlora-dashboard" });
  const title = el("span", { class: "qn-title" });
  const status = el("span", { class: "qn-status", "data-testid": "train-status" });
  const stop = el("button", { class: "qn-btn", "data-testid": "stop-button", textContent: "■ Stop" });
  const chart = el("div", { class: "qn-chart-box", "data-testid": "loss-chart-box" });
  const logBox = el("input", { type: "checkbox", "data-testid": "loss-log-scale" });
  const logScale = el("label", { class: "qn-muted", title: "Loss on a log scale" }, logBox, " log");
  const phase = el("div", { class: "qn-phase", "data-testid": "train-phase" });
  const bar = el("div", { style: "width:0%" });
  const progressText = el("span", { class: "qn-muted", "data-testid": "train-progress" });
  const stats = el("div", { class: "qn-row", "data-testid": "train-stats" });
  const message = el("div", { class: "qn-muted", "data-testid": "train-message" });
  const outputs = el("div", { class: "qn-muted", "data-testid": "train-outputs" });
  const probes = el("div", { "data-testid": "probe-rows" });
  const ledger = el("div", { class: "qn-dash-ledger", "data-testid": "dashboard-ledger" });
  const ranks = el("div", { "data-testid": "rank-rows" });
  root.append(
    el("div", { class: "qn-row qn-head" }, title, status, stop, logScale),
    chart, phase,
    el("div", { class: "qn-row" }, el("div", { class: "qn-progress" }, bar), progressText),
    stats, message, outputs, probes, ranks, ledger,
  );
  mount(host, root);
  const { on, off } = listen(model);  // every model listener, removed by the clean-up render returns

  logBox.addEventListener("change", () => drawChart());
  let clicked = false;
  stop.addEventListener("click", () => {
    clicked = true;
    model.send({ event: "stop" });
    draw();
  });

  function stat(label, value, testid, count) {
    const attrs = testid ? { "data-testid": testid } : {};
    if (count !== undefined) attrs["data-count"] = String(count);
    return el("span", { class: "qn-stat" }, `${label} `, el("b", attrs, value));
  }

  function drawChart() {
    const p = model.get("progress") || {};
    const curve = model.get("curve") || {};
    const n = (curve.steps || []).length + (curve.eval_steps || []).length;
    // the x axis runs to max_steps while the run goes on; a run that ended early fits its own steps
    const st = model.get("status");
    const maxSteps = st === "stopped" || st === "error" ? null : p.max_steps;
    const parts = [lossChart(curve, maxSteps, logBox.checked)];
    // the task metric (eval_metric) as its own curve beside eval loss: the base's score at step 0, then each eval
    if ((curve.metric_steps || []).length) parts.push(metricChart(curve, maxSteps, p.metric_name || "task metric"));
    chart.replaceChildren(...parts);
    chart.classList.toggle("qn-chart-empty", n === 0);
  }

  function draw() {
    const p = model.get("progress") || {};
    let st = model.get("status");
    if (clicked && st === "running") st = "stopping";
    title.textContent = model.get("title");
    status.textContent = st;
    status.setAttribute("data-status", st);
    status.className = `qn-status qn-status-${st}`;
    const s = stopState(st, clicked, model.get("stop_live"));
    stop.hidden = s.hidden;
    stop.disabled = s.disabled;
    stop.title = s.hint;
    const active = st === "running" || st === "waiting" || st === "stopping";
    const ph = model.get("phase") || "";
    phase.textContent = ph && active ? `${ph}…` : "";
    phase.hidden = !(ph && active);
    const max = p.max_steps || 0, step = p.step || 0;
    bar.style.width = `${max ? Math.min(100, (100 * step) / max) : 0}%`;
    const epoch = p.epoch === undefined || p.epoch === null ? "" : ` · epoch ${Number(p.epoch).toFixed(2)}`;
    // a resumed run's time is this part's: say which steps it covers
    const part = p.resumed_from ? ` (steps ${p.resumed_from + 1}–${step})` : "";
    const timing = active ? ` · ETA ${eta(p.eta_s)}` : p.elapsed_s ? ` · took ${eta(p.elapsed_s)}${part}` : "";
    progressText.textContent = `step ${step}/${max || "?"}${epoch}${timing}`;
    const tok = [stat("tokens/s", rate(p.tokens_per_s), "tokens-per-s")];
    if (p.mean_tokens_per_s) tok.push(stat("mean", rate(p.mean_tokens_per_s), "mean-tokens-per-s"));
    if (p.mfu !== undefined && p.mfu !== null) tok.push(stat("MFU", `${(100 * p.mfu).toFixed(1)}%`, "mfu"));
    if (p.step_s && p.predicted_step_s) {
      tok.push(stat("s/step", `${Number(p.step_s).toFixed(2)} (predicted ${Number(p.predicted_step_s).toFixed(2)})`, "step-seconds"));
    }
    stats.replaceChildren(
      stat("loss", num(p.loss), "train-loss"),
      stat("eval loss", num(p.eval_loss), "eval-loss"),
      ...(p.metric || p.base_metric ? [stat(p.metric_name || "task metric",
        [p.base_metric, p.metric].filter(Boolean).join(" → ") + (p.metric_s ? ` (scoring ${p.metric_s.toFixed(1)} s)` : ""),
        "task-metric")] : []),
      stat("lr", lrText(p), "learning-rate"),
      ...tok,
      stat("loss points", String(model.get("n_loss_points")), "loss-points", model.get("n_loss_points")),
      stat("eval points", String(model.get("n_eval_points")), "eval-points", model.get("n_eval_points")),
    );
    const busyHint = !model.get("stop_live") && (st === "running" || st === "waiting") ? s.hint : "";
    message.textContent = model.get("message") || busyHint;
    const o = model.get("outputs") || {};
    outputs.replaceChildren(...Object.entries(o).map(([k, v]) =>
      el("div", {}, `${k.replace(/_/g, " ")}: `, el("code", {}, v))));
  }

  function drawProbes() {
    const t = probeTable(model.get("probes") || []);
    probes.replaceChildren(...(t ? [t] : []));
  }

  const drawLedger = () => renderLedger(ledger, model.get("ledger"), "memory");
  for (const name of ["progress", "status", "title", "n_loss_points", "n_eval_points", "message", "stop_live",
    "phase", "outputs"]) {
    on(`change:${name}`, draw);
  }
  on("change:curve", drawChart);
  on("change:progress", drawChart);
  on("change:status", drawChart);
  on("change:probes", drawProbes);
  const drawRanks = () => { const t = rankTable(model.get("ranks")); ranks.replaceChildren(...(t ? [t] : [])); };
  on("change:ranks", drawRanks);
  drawRanks();
  on("change:ledger", drawLedger);
  draw();
  drawChart();
  drawProbes();
  drawLedger();
  return off;
}
export default { render };
