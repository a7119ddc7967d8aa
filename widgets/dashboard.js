// Training dashboard panel: status, Stop, progress/ETA, live numbers, probe generations, memory ledger.
// The loss curve is a plotly FigureWidget displayed next to this panel (see qlora_nb/views/dashboard.py).
import { el, renderLedger } from "./format.js";

function eta(s) {
  if (s === null || s === undefined || !(s >= 0)) return "–";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const mm = h ? String(m).padStart(2, "0") : String(m);
  return (h ? `${h}:` : "") + `${mm}:${String(sec).padStart(2, "0")}`;
}
const num = (v, digits = 4) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
const sci = (v) => (v === null || v === undefined ? "–" : Number(v).toExponential(2));

function render({ model, el: host }) {
  const root = el("div", { class: "qn-card qn-dashboard", "data-testid": "qlora-dashboard" });
  const title = el("span", { class: "qn-title" });
  const status = el("span", { class: "qn-status", "data-testid": "train-status" });
  const stop = el("button", { class: "qn-btn", "data-testid": "stop-button", textContent: "■ Stop" });
  const bar = el("div", { style: "width:0%" });
  const progressText = el("span", { class: "qn-muted", "data-testid": "train-progress" });
  const stats = el("div", { class: "qn-row", "data-testid": "train-stats" });
  const message = el("div", { class: "qn-muted" });
  const probes = el("div", { "data-testid": "probe-rows" });
  const ledger = el("div", { class: "qn-dash-ledger", "data-testid": "dashboard-ledger" });
  root.append(
    el("div", { class: "qn-row" }, title, status, stop),
    el("div", { class: "qn-row" }, el("div", { class: "qn-progress" }, bar), progressText),
    stats, message, probes, ledger,
  );
  host.append(root);

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

  function draw() {
    const p = model.get("progress") || {};
    let st = model.get("status");
    if (clicked && st === "running") st = "stopping";
    title.textContent = model.get("title");
    status.textContent = st;
    status.setAttribute("data-status", st);
    status.className = `qn-status qn-status-${st}`;
    const active = st === "running" || st === "waiting";
    stop.disabled = !active || clicked;
    stop.title = model.get("stop_live") ? "stop at the next step and save a checkpoint"
      : "handled when the cell finishes; use the kernel interrupt (■) to stop now";
    const max = p.max_steps || 0, step = p.step || 0;
    bar.style.width = `${max ? Math.min(100, (100 * step) / max) : 0}%`;
    const epoch = p.epoch === undefined || p.epoch === null ? "" : ` · epoch ${Number(p.epoch).toFixed(2)}`;
    const timing = active ? ` · ETA ${eta(p.eta_s)}` : p.elapsed_s ? ` · took ${eta(p.elapsed_s)}` : "";
    progressText.textContent = `step ${step}/${max || "?"}${epoch}${timing}`;
    stats.replaceChildren(
      stat("loss", num(p.loss), "train-loss"),
      stat("eval loss", num(p.eval_loss), "eval-loss"),
      stat("lr", sci(p.learning_rate), "learning-rate"),
      stat("tokens/s", p.tokens_per_s ? Math.round(p.tokens_per_s).toLocaleString("en-US") : "–", "tokens-per-s"),
      stat("loss points", String(model.get("n_loss_points")), "loss-points", model.get("n_loss_points")),
      stat("eval points", String(model.get("n_eval_points")), "eval-points", model.get("n_eval_points")),
    );
    message.textContent = model.get("message") || "";
  }

  function drawProbes() {
    const rows = model.get("probes") || [];
    probes.replaceChildren();
    if (!rows.length) return;
    const last = rows[rows.length - 1].step;
    const t = el("table", { class: "qn-table qn-probes" },
      el("tr", {}, el("th", {}, `probe @ step ${last}`), el("th", {}, "base"), el("th", {}, "adapted")));
    for (const r of rows.filter((x) => x.step === last)) {
      t.append(el("tr", { "data-testid": "probe-row" },
        el("td", {}, r.prompt ?? ""), el("td", { class: "qn-gen" }, r.base ?? ""), el("td", { class: "qn-gen" }, r.adapted ?? "")));
    }
    probes.append(t);
  }

  const drawLedger = () => renderLedger(ledger, model.get("ledger"), "memory");
  for (const name of ["progress", "status", "title", "n_loss_points", "n_eval_points", "message", "stop_live"]) {
    model.on(`change:${name}`, draw);
  }
  model.on("change:probes", drawProbes);
  model.on("change:ledger", drawLedger);
  draw();
  drawProbes();
  drawLedger();
}
export default { render };
