// Run history: one row per run (read from disk by qlora_nb.engine.training.runs). Tick two or more rows to overlay
// their loss/eval curves and task metric and to see their configs side by side, differences highlighted.
// Row buttons: load the run's adapter into the session (a new playground column), or get the resume cell.
import { el, mount, bytes, listen } from "./format.js";
import { overlayChart, RUN_COLORS } from "./chart.js";

const num = (v, d = 4) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
const dur = (s) => (s === null || s === undefined ? "–" : s < 120 ? `${Math.round(s)}s` : `${(s / 60).toFixed(1)}min`);
const cell = (v) => (v === null || v === undefined ? "–" : typeof v === "number" ? String(Number(v.toPrecision(4))) : String(v));

function render({ model, el: host }) {
  const { on, off } = listen(model);  // every model listener, removed by the clean-up render returns
  const root = el("div", { class: "qn-card qn-runs", "data-testid": "qlora-runs" });
  const title = el("div", { class: "qn-title" });
  const table = el("div", { class: "qn-runs-scroll", "data-testid": "runs-table" });
  const charts = el("div", { class: "qn-chart-box", "data-testid": "runs-charts" });
  const diff = el("div", { "data-testid": "runs-diff" });
  const message = el("div", { class: "qn-muted", "data-testid": "runs-message" });
  const cellBox = el("pre", { class: "qn-code", "data-testid": "runs-cell" });
  root.append(title, table, message, cellBox, charts, diff);
  mount(host, root);

  function drawTable() {
    const runs = model.get("runs") || [];
    const sel = new Set(model.get("selected") || []);
    title.textContent = `${runs.length} run(s) in ${model.get("folder")}`;
    const head = ["", "run", "date", "status", "model", "data", "changed options", "steps", "loss", "eval", "metric",
      "tok/s", "peak", "time", ""];
    const t = el("table", { class: "qn-table" }, el("tr", {}, ...head.map((h) => el("th", {}, h))));
    const order = [...(model.get("selected") || [])];
    for (const r of runs) {
      const box = el("input", { type: "checkbox", checked: sel.has(r.name), "data-testid": "run-select" });
      box.addEventListener("change", () => {
        const now = (model.get("selected") || []).filter((n) => n !== r.name);
        if (box.checked) now.push(r.name);
        model.set("selected", now);
        model.save_changes();
      });
      const i = order.indexOf(r.name);
      const swatch = el("span", { style: `color:${i >= 0 ? RUN_COLORS[i % RUN_COLORS.length] : "transparent"}` }, "■ ");
      const changed = Object.entries(r.changed || {}).map(([k, v]) => `${k}=${cell(v)}`).join(", ") || "defaults";
      const load = el("button", { class: "qn-btn qn-btn-small", textContent: "load adapter", "data-testid": "run-load",
        disabled: !r.adapter_dir || !model.get("can_load"), title: r.adapter_dir ? `load ${r.adapter_dir}` : "no adapter saved" });
      load.addEventListener("click", () => model.send({ event: "load", name: r.name }));
      const resume = el("button", { class: "qn-btn qn-btn-small", textContent: "resume", "data-testid": "run-resume",
        disabled: !r.checkpoint, title: r.checkpoint ? `continue from ${r.checkpoint}` : "no checkpoint" });
      resume.addEventListener("click", () => model.send({ event: "resume", name: r.name }));
      const data = `${r.data ?? "–"}${r.data_sha256 ? ` (${r.data_sha256})` : ""}`;
      t.append(el("tr", { "data-testid": "run-row", "data-run": r.name, title: (r.notes || []).join("; ") },
        el("td", {}, box), el("td", {}, swatch, r.name), el("td", {}, r.date), el("td", {}, r.status),
        el("td", {}, cell(r.model)), el("td", {}, data), el("td", { class: "qn-muted qn-runs-opts" }, changed),
        el("td", {}, r.steps === null ? "?" : `${r.steps}/${r.max_steps ?? "?"}`), el("td", {}, num(r.train_loss)),
        el("td", {}, num(r.eval_loss)), el("td", { "data-testid": "run-metric" }, r.metric || "–"),
        el("td", {}, r.tokens_per_s ? String(Math.round(r.tokens_per_s)) : "–"),
        el("td", {}, r.peak_memory ? bytes(r.peak_memory) : "–"), el("td", {}, dur(r.duration_s)),
        el("td", {}, load, " ", resume)));
    }
    table.replaceChildren(t);
  }

  function drawCharts() {
    const names = model.get("selected") || [];
    const curves = model.get("curves") || {};
    if (!names.length) { charts.replaceChildren(el("div", { class: "qn-muted" }, "tick runs to overlay their curves")); return; }
    const parts = [overlayChart(curves, names, "loss")];
    if (names.some((n) => ((curves[n] || {}).metric || []).length)) parts.push(overlayChart(curves, names, "metric"));
    charts.replaceChildren(...parts);
  }

  // Differing rows first and always shown; the identical ones fold into "same in all runs".
  function drawDiff() {
    const c = model.get("comparison") || {};
    if (!c.names) { diff.replaceChildren(); return; }
    const table = (rows, testid) => {
      const t = el("table", { class: "qn-table qn-runs-diff", "data-testid": testid },
        el("tr", {}, el("th", {}, ""), ...c.names.map((n) => el("th", {}, n))));
      for (const row of rows) {
        t.append(el("tr", { class: row.differs ? "qn-differs" : "", "data-differs": String(row.differs),
          "data-key": row.key }, el("td", {}, row.key), ...row.values.map((v) => el("td", {}, cell(v)))));
      }
      return t;
    };
    const differ = c.rows.filter((r) => r.differs), same = c.rows.filter((r) => !r.differs);
    const fold = el("details", {}, el("summary", { class: "qn-muted" }, `${same.length} more, the same in all runs`),
      table(same, "runs-same-table"));
    diff.replaceChildren(el("div", { class: "qn-muted" }, `configs and results side by side: ${differ.length} differ`),
      table(differ, "runs-diff-table"), fold);
  }

  function drawMessage() {
    message.textContent = model.get("message") || "";
    cellBox.textContent = model.get("cell") || "";
    cellBox.hidden = !model.get("cell");
  }

  on("change:runs", drawTable);
  on("change:selected", () => { drawTable(); drawCharts(); });
  on("change:curves", drawCharts);
  on("change:comparison", drawDiff);
  on("change:message", drawMessage);
  on("change:cell", drawMessage);
  drawTable(); drawCharts(); drawDiff(); drawMessage();
  return off;
}
export default { render };
