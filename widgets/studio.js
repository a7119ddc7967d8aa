// Studio panel: data + live preview, options (from TrainConfig's metadata), memory forecast, Train/Stop/Resume,
// "Copy as cell". The live dashboard is a separate widget shown below this panel (see qlora_nb/widgets/studio.py).
import { el, bytes, COLORS, LABELS, mount, listen } from "./format.js";


function textInput(value, testid, onCommit, placeholder = "") {
  const input = el("input", { type: "text", class: "qn-input", value: value ?? "", placeholder, "data-testid": testid });
  input.addEventListener("change", () => onCommit(input.value));
  return input;
}

function optionControl(spec, value, onChange) {
  const testid = `opt-${spec.name}`;
  if (spec.kind === "bool") {
    const box = el("input", { type: "checkbox", checked: !!value, "data-testid": testid });
    box.addEventListener("change", () => onChange(box.checked));
    return box;
  }
  if (spec.kind === "choice") {
    const sel = el("select", { class: "qn-input", "data-testid": testid });
    for (const c of spec.choices) sel.append(el("option", { value: c, selected: c === value }, String(c)));
    sel.addEventListener("change", () => onChange(sel.value));
    return sel;
  }
  return textInput(value === null || value === undefined ? "" : String(value), testid, onChange,
    spec.optional ? "auto" : String(spec.default));
}

function renderPreview(node, p, error) {
  node.replaceChildren();
  if (error) { node.append(el("div", { class: "qn-error", "data-testid": "studio-data-error" }, error)); return; }
  if (!p || !p.rows) { node.append(el("div", { class: "qn-muted" }, "type a data path (or 'demo', or a notebook variable) and press Enter")); return; }
  node.append(el("div", { class: "qn-row qn-muted", "data-testid": "studio-preview-summary", "data-rows": String(p.n_rows), "data-truncated": String(p.truncated) },
    `${p.source}: ${p.n_rows} rows${p.n_val ? ` + ${p.n_val} held out` : ""} · longest ${p.longest} tokens · `,
    el("b", { class: p.truncated ? "qn-warn" : "" }, `${p.truncated} row${p.truncated === 1 ? "" : "s"} longer than cutoff_len=${p.cutoff_len} (truncated)`)));
  node.append(el("div", { class: "qn-muted qn-legend" },
    el("span", {}, el("span", { class: "qn-swatch qn-tok-prompt" }), "prompt (not learned)"),
    el("span", {}, el("span", { class: "qn-swatch qn-tok-learn" }), "completion (learned)")));
  // one row shown, the others folded: the panel stays short enough to see Train/Stop next to the loss curve
  const more = el("details", { "data-testid": "studio-preview-more" }, el("summary", { class: "qn-muted" }, `${p.rows.length - 1} more rows`));
  p.rows.forEach((r, i) => {
    const body = el("div", { class: "qn-preview-text" });
    r.pieces.forEach((piece, j) => body.append(el("span", { class: r.learned[j] ? "qn-tok-learn" : "qn-tok-prompt" }, piece)));
    (i === 0 ? node : more).append(el("div", { class: "qn-preview-row", "data-testid": "studio-preview-row" },
      el("div", { class: "qn-muted" }, `row ${i + 1}: ${r.prompt_tokens} prompt + ${r.completion_tokens} completion tokens${r.truncated ? " · truncated" : ""}`),
      body));
  });
  if (p.rows.length > 1) node.append(more);
}

// the planner's components beyond the ledger's (activations are split into activations, logits and runtime overhead)
const EXTRA = { activations: ["activations", "#a78bfa"], logits: ["logits", "#c4b5fd"], overhead: ["runtime overhead", "#cbd5e1"] };
const colour = (k) => COLORS[k] || (EXTRA[k] || [])[1] || "#999";
const label = (k) => LABELS[k] || (EXTRA[k] || [])[0] || k;

function renderForecast(node, f, apply) {
  node.replaceChildren(el("div", { class: "qn-title" }, "memory forecast"));
  if (!f || f.error) { node.append(el("div", { class: "qn-muted" }, f && f.error ? f.error : "–")); return; }
  const limit = f.limit_bytes || 1, total = f.total || 0;
  const scale = Math.max(limit, total);
  const bar = el("div", { class: "qn-bar", style: "position:relative" });
  const legend = el("div", { class: "qn-legend" });
  for (const [k, v] of Object.entries(f.components || {})) {
    if (!v) continue;
    bar.append(el("div", { style: `width:${(100 * v) / scale}%;background:${colour(k)}`, title: `${label(k)}: ${bytes(v)}` }));
    legend.append(el("span", {}, el("span", { class: "qn-swatch", style: `background:${colour(k)}` }), `${label(k)} ${bytes(v)}`));
  }
  const fits = f.verdict === "fits";
  node.append(el("div", { class: "qn-row" },
    el("span", { class: "qn-stat" }, "predicted peak ", el("b", { "data-testid": "forecast-total" }, bytes(total))),
    el("span", { class: "qn-stat" }, "available ", el("b", {}, bytes(f.limit_bytes)), ` (${f.limit_source || ""})`),
    el("span", { class: `qn-status ${fits ? "qn-status-done" : "qn-status-error"}`, "data-testid": "forecast-verdict", "data-verdict": f.verdict },
      fits ? "fits" : "won't fit")),
    bar, legend,
    el("div", { class: "qn-muted" }, `for ${f.batch_size} rows × ${f.seq_len} tokens (the longest row, capped at cutoff_len); ${f.reason || ""}`));
  if (f.time) node.append(renderTime(f.time, apply));
}

const secs = (s) => (s === null || s === undefined ? "–" : s < 120 ? `${s.toFixed(2)} s` : s < 7200 ? `${(s / 60).toFixed(1)} min` : `${(s / 3600).toFixed(1)} h`);

// predicted step and run time before Train, and the fastest setup that fits (apply: batch/accumulation/checkpointing)
function renderTime(t, apply) {
  const box = el("div", { "data-testid": "forecast-time" });
  const est = t.source === "estimated" ? ", estimated" : "";
  box.append(el("div", { class: "qn-row" },
    el("span", { class: "qn-stat" }, "predicted ", el("b", { "data-testid": "forecast-step-seconds" }, secs(t.step_seconds)), ` per step (±${Math.round(100 * t.uncertainty)}%${est})`),
    el("span", { class: "qn-stat" }, "run ", el("b", { "data-testid": "forecast-run-seconds" }, t.run_seconds ? secs(t.run_seconds) : "–"), t.run_seconds ? ` (${t.run_note})` : ` (${t.run_note})`)));
  if (t.fastest) {
    const row = el("div", { class: "qn-row qn-muted" }, `fastest that fits: ${t.fastest.text}, ${secs(t.fastest.step_seconds)} per step`);
    if (t.fastest.applicable && apply) {
      const b = el("button", { class: "qn-btn", "data-testid": "forecast-apply-fastest", textContent: "apply" });
      b.addEventListener("click", () => apply({ batch_size: t.fastest.batch_size, gradient_accumulation_steps: t.fastest.gradient_accumulation_steps, gradient_checkpointing: t.fastest.gradient_checkpointing }));
      row.append(" ", b);
    } else if (!t.fastest.applicable) {
      row.append(" (load the model with that base to use it)");
    }
    box.append(row);
  }
  return box;
}

function render({ model, el: host }) {
  const root = el("div", { class: "qn-card qn-studio", "data-testid": "qlora-studio" });
  mount(host, root);
  const { on, off } = listen(model);  // every model listener, removed by the clean-up render returns
  const title = el("span", { class: "qn-title" });
  const status = el("span", { class: "qn-status", "data-testid": "studio-status" });
  const dataIn = textInput(model.get("data"), "studio-data", (v) => { model.set("data", v); model.save_changes(); }, "demo, train.jsonl or $df");
  const tplIn = textInput(model.get("template"), "studio-template", (v) => { model.set("template", v); model.save_changes(); }, "auto: instruction/input/output, prompt/completion or chat");
  const preview = el("div", { "data-testid": "studio-preview" });
  const options = el("div", { class: "qn-options", "data-testid": "studio-options" });
  const forecast = el("div", { "data-testid": "studio-forecast" });
  const train = el("button", { class: "qn-btn qn-btn-primary", "data-testid": "studio-train", textContent: "▶ Train" });
  const stop = el("button", { class: "qn-btn", "data-testid": "studio-stop", textContent: "■ Stop" });
  const resume = el("button", { class: "qn-btn", "data-testid": "studio-resume", textContent: "↻ Resume" });
  const copy = el("button", { class: "qn-btn", "data-testid": "studio-copy", textContent: "Copy as cell" });
  const runInfo = el("span", { class: "qn-muted", "data-testid": "studio-run" });
  const note = el("div", { class: "qn-muted", "data-testid": "studio-note" });
  const message = el("div", { class: "qn-muted", "data-testid": "studio-message" });
  const error = el("div", { class: "qn-error", "data-testid": "studio-error" });
  const code = el("pre", { class: "qn-code", "data-testid": "studio-code" });
  // Folded while a run goes on, so Train/Stop sit right above the dashboard's curve in a 1,000 px window
  // (issue 23: the panel was 2,000 px tall); a click on the summary opens it again.
  const settings = el("details", { open: true, "data-testid": "studio-settings" },
    el("summary", { class: "qn-muted" }, "data, options and forecast"),
    el("div", { class: "qn-section" }, el("div", { class: "qn-title" }, "data"),
      el("div", { class: "qn-form" }, el("label", {}, "data"), dataIn, el("label", {}, "template"), tplIn), preview),
    el("div", { class: "qn-section" }, el("div", { class: "qn-title" }, "options"), options),
    el("div", { class: "qn-section" }, forecast));
  let wasRunning = false;
  root.append(
    el("div", { class: "qn-row" }, title, status),
    settings,
    el("div", { class: "qn-row" }, train, stop, resume, copy, runInfo), note, message, error,
    el("details", {}, el("summary", { class: "qn-muted" }, "the %%qlora_train cell for these settings"), code));

  let pending = null;  // the click being handled, until the kernel answers with a new status
  const send = (event) => { pending = event; model.send({ event }); draw(); };
  train.addEventListener("click", () => send("train"));
  resume.addEventListener("click", () => send("resume"));
  stop.addEventListener("click", async () => {
    stop.disabled = true;
    const id = model.get("dashboard_id");
    if (id && model.widget_manager) {  // the dashboard's comm is the one routed to a subshell: reuse its Stop
      const dash = await model.widget_manager.get_model(id);
      dash.send({ event: "stop" });
    } else model.send({ event: "stop" });
    pending = "stop";
    draw();
  });
  copy.addEventListener("click", async () => {
    const text = model.get("code");
    try { await navigator.clipboard.writeText(text); copy.textContent = "copied ✓"; }
    catch (e) { code.parentElement.open = true; copy.textContent = "select the cell below"; }
    setTimeout(() => { copy.textContent = "Copy as cell"; }, 2000);
  });

  const controls = {};  // built once; later changes update them in place so focus and typing are never lost
  function drawOptions() {
    const values = model.get("values") || {}, errors = model.get("field_errors") || {};
    for (const spec of model.get("specs") || []) {
      if (!controls[spec.name]) {
        const ctl = optionControl(spec, values[spec.name], (v) => {
          model.set("values", { ...model.get("values"), [spec.name]: v });
          model.save_changes();
        });
        const err = el("span", { class: "qn-error", "data-testid": `opt-error-${spec.name}` });
        controls[spec.name] = { ctl, err };
        options.append(el("label", { title: spec.help }, spec.name), ctl, err);
      }
      const { ctl, err } = controls[spec.name];
      const v = values[spec.name];
      if (document.activeElement !== ctl) {
        if (spec.kind === "bool") ctl.checked = !!v;
        else ctl.value = v === null || v === undefined ? "" : String(v);
      }
      err.textContent = errors[spec.name] || "";
    }
  }

  function draw() {
    const st = model.get("status");
    if (pending && pending !== "stop" && st === "running") pending = null;
    const running = st === "running" || (pending && pending !== "stop");
    if (running && !wasRunning) settings.open = false;  // fold on the way into a run only: the user may reopen it
    wasRunning = running;
    title.textContent = model.get("title");
    status.textContent = running && st !== "running" ? "starting" : st;
    status.setAttribute("data-status", st);
    status.className = `qn-status qn-status-${st === "idle" ? "waiting" : st}`;
    const invalid = !!model.get("data_error") || !model.get("data") || Object.keys(model.get("field_errors") || {}).length > 0;
    train.disabled = running || invalid;
    train.title = invalid ? "choose valid data and options first" : "train with these settings (same call as %%qlora_train)";
    resume.disabled = running || !model.get("can_resume");
    stop.disabled = !running || pending === "stop";
    const run = model.get("run") || {};
    // a finished resumed run says where it ended too, not only the checkpoint it started from
    const ended = run.resumed_from && run.steps ? `; ended at step ${run.steps}` : "";
    runInfo.textContent = run.resumed_from ? `resumed from checkpoint step ${run.resumed_from}${ended}` : "";
    for (const k of ["first_step", "step", "checkpoint_step", "resumed_from"]) runInfo.setAttribute(`data-${k.replace("_", "-")}`, String(run[k] ?? ""));
    note.textContent = running && !model.get("stop_live") && model.get("in_kernel")
      ? "While a run is busy, Stop needs the kernel's Interrupt (■ in the toolbar) on this kernel (no ipykernel subshells): "
        + "the run then stops at the next step with a checkpoint." : "";
    message.textContent = model.get("message") || "";
    error.textContent = model.get("error") || "";
    code.textContent = model.get("code") || "";
  }

  const drawPreview = () => renderPreview(preview, model.get("preview"), model.get("data_error"));
  const applyValues = (changes) => { model.set("values", { ...model.get("values"), ...changes }); model.save_changes(); };
  const drawForecast = () => renderForecast(forecast, model.get("forecast"), applyValues);
  on("change:specs", drawOptions);
  on("change:values", drawOptions);
  on("change:field_errors", () => { drawOptions(); draw(); });
  on("change:preview", drawPreview);
  on("change:data_error", () => { drawPreview(); draw(); });
  on("change:forecast", drawForecast);
  on("change:data", () => { dataIn.value = model.get("data"); draw(); });
  on("change:template", () => { tplIn.value = model.get("template"); });
  for (const name of ["status", "can_resume", "stop_live", "run", "message", "error", "code", "title", "dashboard_id"]) {
    on(`change:${name}`, draw);
  }
  on("msg:custom", (msg) => { if (msg && msg.event === "handled") { pending = null; draw(); } });
  drawOptions(); drawPreview(); drawForecast(); draw();
  return off;
}
export default { render };
