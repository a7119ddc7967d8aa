// Compare widget: base and adapter columns side by side, streamed, with divergence and diffs marked.
import { el } from "./format.js";

// Background for a log-prob change: green where the adapter made the token likelier, red where less likely.
function shadeStyle(delta, scale) {
  if (delta === null || delta === undefined || !scale) return "";
  const a = Math.min(1, Math.abs(delta) / scale) * 0.55;
  return delta >= 0 ? `background:rgba(22,163,74,${a.toFixed(3)})` : `background:rgba(220,38,38,${a.toFixed(3)})`;
}

function cellBody(cell, shade, scale, streaming) {
  const body = el("div", { class: "qn-col-body" });
  if (!cell.tokens) {
    body.append(cell.text || "");
    if (streaming) body.append(el("span", { class: "qn-cursor" }, "▍"));
    return body;
  }
  const deltas = shade ? cell.logprob_delta : null;
  cell.tokens.forEach((piece, i) => {
    if (i === cell.diverge_at) body.append(el("span", { class: "qn-diverge", "data-testid": "compare-diverge", title: `outputs diverge at token ${i}` }));
    const attrs = { class: cell.diff && cell.diff[i] ? "qn-tok qn-diff" : "qn-tok" };
    if (deltas && deltas[i] !== undefined) {
      attrs.style = shadeStyle(deltas[i], scale);
      attrs.title = `token ${i}: Δ log p = ${deltas[i].toFixed(3)}`;
    }
    body.append(el("span", attrs, piece));
  });
  if (cell.diverge_at !== null && cell.diverge_at !== undefined && cell.diverge_at >= cell.tokens.length) {
    body.append(el("span", { class: "qn-diverge", "data-testid": "compare-diverge", title: "output ends here" }));
  }
  return body;
}

function badge(column, cell, done) {
  if (!done || column === "base") return null;
  if (!cell.changed) return el("span", { class: "qn-badge qn-muted" }, "same as base");
  return el("span", { class: "qn-badge qn-badge-diff" }, `differs from token ${cell.diverge_at}`);
}

function render({ model, el: host }) {
  const root = el("div", { class: "qn-card qn-compare", "data-testid": "qlora-compare" });
  host.append(root);
  const draw = () => {
    const columns = model.get("columns") || [];
    const rows = model.get("rows") || [];
    const status = model.get("status");
    const shade = model.get("has_logprobs") && model.get("shade");
    let scale = 0;
    if (shade) for (const r of rows) for (const c of Object.values(r.columns || {})) for (const d of c.logprob_delta || []) scale = Math.max(scale, Math.abs(d));
    root.replaceChildren();
    const head = el("div", { class: "qn-row" },
      el("span", { class: "qn-title" }, model.get("title")),
      el("span", { class: "qn-stat", "data-testid": "compare-changed-count" },
        `${model.get("changed_count")} of ${model.get("total")} prompts changed`),
      el("span", { class: "qn-muted", "data-testid": "compare-status" }, status === "running" ? "generating…" : status === "stopped" ? "stopped" : ""));
    if (model.get("has_logprobs")) {
      const box = el("input", { type: "checkbox", checked: model.get("shade") });
      box.addEventListener("change", () => { model.set("shade", box.checked); model.save_changes(); });
      head.append(el("label", { class: "qn-muted" }, box, " shade by log-prob change"));
    }
    root.append(head);
    for (const n of model.get("notes") || []) root.append(el("div", { class: "qn-muted qn-note", "data-testid": "compare-note" }, n));
    rows.forEach((row, i) => {
      const block = el("div", { class: "qn-compare-row", "data-testid": "compare-row" });
      block.append(el("div", { class: "qn-muted qn-prompt", title: row.prompt || "" }, `[${i}] `, row.prompt || ""));
      if (row.reference) block.append(el("div", { class: "qn-muted qn-prompt" }, "expected: ", row.reference));
      const grid = el("div", { class: "qn-cols", style: `grid-template-columns:repeat(${Math.max(1, columns.length)}, minmax(0, 1fr))` });
      for (const c of columns) {
        const cell = (row.columns || {})[c] || { text: "" };
        grid.append(el("div", { class: "qn-col", "data-testid": "compare-column", "data-column": c },
          el("div", { class: "qn-col-head" }, el("b", {}, c), badge(c, cell, row.done)),
          cellBody(cell, shade, scale, !row.done && status === "running")));
      }
      block.append(grid);
      root.append(block);
    });
  };
  for (const name of ["columns", "rows", "status", "changed_count", "total", "notes", "shade", "has_logprobs", "title"]) {
    model.on(`change:${name}`, draw);
  }
  draw();
}
export default { render };
