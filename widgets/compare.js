// Compare widget: base and adapter columns side by side, streamed, with divergence and diffs marked.
import { el, sharedTemplate, ownPart, divergeText, mount, listen } from "./format.js";

// Background for a log-prob change: green where the adapter made the token likelier, red where less likely.
function shadeStyle(delta, scale) {
  if (delta === null || delta === undefined || !scale) return "";
  const a = Math.min(1, Math.abs(delta) / scale) * 0.55;
  return delta >= 0 ? `background:rgba(22,163,74,${a.toFixed(3)})` : `background:rgba(220,38,38,${a.toFixed(3)})`;
}

function cellBody(cell, shade, scale, streaming, against) {
  const body = el("div", { class: "qn-col-body" });
  if (against !== null && !shade && !streaming) {  // differences on word boundaries against the chosen column
    for (const [piece, changed] of wordDiff(cell.text || "", against)) {
      body.append(changed ? el("span", { class: "qn-diff", "data-testid": "compare-diff" }, piece) : piece);
    }
    return body;
  }
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
  return el("span", { class: "qn-badge qn-badge-diff" }, divergeText(cell.diverge_at));
}

// Word-level differences of `text` against `other`: [piece, changed] segments. Whitespace is never marked and
// whitespace-only changes do not count (words are compared without it); a word is marked when it is not part
// of the longest common subsequence of words.
export function wordDiff(text, other) {
  const pieces = (text || "").split(/(\s+)/).filter((x) => x !== "");
  const words = pieces.filter((x) => !/^\s+$/.test(x));
  const ref = (other || "").split(/\s+/).filter((x) => x !== "");
  const n = words.length, m = ref.length;
  const L = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--)
    L[i][j] = words[i] === ref[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  const same = new Array(n).fill(false);
  for (let i = 0, j = 0; i < n && j < m;) {
    if (words[i] === ref[j]) { same[i] = true; i++; j++; } else if (L[i + 1][j] >= L[i][j + 1]) i++; else j++;
  }
  let w = 0;
  return pieces.map((p) => (/^\s+$/.test(p) ? [p, false] : [p, !same[w++]]));
}

function render({ model, el: host }) {
  let against = "base";  // the column the others are compared with (a view choice, not synced)
  const root = el("div", { class: "qn-card qn-compare", "data-testid": "qlora-compare" });
  mount(host, root);
  const { on, off } = listen(model);  // every model listener, removed by the clean-up render returns
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
    if (columns.length >= 2) {
      if (!columns.includes(against)) against = columns[0];
      const pick = el("select", { "data-testid": "compare-against" },
        ...columns.map((c) => el("option", { value: c, selected: c === against }, c)));
      pick.addEventListener("change", () => { against = pick.value; draw(); });
      head.append(el("label", { class: "qn-muted" }, "mark differences from ", pick));
    }
    root.append(head);
    const matches = {};
    const tpl = sharedTemplate(rows.map((r) => r.prompt || ""));
    if (tpl.head.length || tpl.tail.length) {
      root.append(el("details", { class: "qn-muted qn-template", "data-testid": "compare-template" },
        el("summary", {}, "the same template wraps every prompt (shown once)"),
        el("div", { class: "qn-prompt" }, [...tpl.head, "…", ...tpl.tail].join("\n"))));
    }
    for (const n of model.get("notes") || []) root.append(el("div", { class: "qn-muted qn-note", "data-testid": "compare-note" }, n));
    rows.forEach((row, i) => {
      const block = el("div", { class: "qn-compare-row", "data-testid": "compare-row" });
      // the whole input, never clipped; a long templated prompt folds, its first line stays visible
      const prompt = ownPart(row.prompt || "", tpl);
      const first = prompt.split("\n").find((x) => x.trim()) || "";
      const input = prompt.length > 240
        ? el("details", { class: "qn-prompt", "data-testid": "compare-input" }, el("summary", {}, `[${i}] ${first}`), prompt)
        : el("div", { class: "qn-prompt", "data-testid": "compare-input" }, `[${i}] `, prompt);
      block.append(input);
      if (row.reference) block.append(el("div", { class: "qn-muted qn-reference", "data-testid": "compare-reference" }, "expected: ", row.reference));
      const grid = el("div", { class: "qn-cols", style: `grid-template-columns:repeat(${Math.max(1, columns.length)}, minmax(0, 1fr))` });
      for (const c of columns) {
        const cell = (row.columns || {})[c] || { text: "" };
        // the engine's score (qlora_nb.data.scoring.exact_match) once the row is done; the same rule while streaming
        const exact = row.reference && row.done && (cell.score !== undefined ? cell.score >= 1
          : (cell.text || "").trim() === String(row.reference).trim());
        if (exact) matches[c] = (matches[c] || 0) + 1;
        grid.append(el("div", { class: "qn-col", "data-testid": "compare-column", "data-column": c },
          el("div", { class: "qn-col-head" }, el("b", {}, c), exact ? el("span", { class: "qn-badge qn-match", "data-testid": "compare-exact" }, "✓ exact match") : null, badge(c, cell, row.done)),
          cellBody(cell, shade, scale, !row.done && status === "running",
            c === against ? null : (((row.columns || {})[against] || {}).text ?? null))));
      }
      block.append(grid);
      root.append(block);
    });
    if (rows.some((r) => r.reference)) {
      const refs = rows.filter((r) => r.reference && r.done).length;
      head.append(el("span", { class: "qn-stat", "data-testid": "compare-exact-count" },
        "exact matches: " + columns.map((c) => `${c} ${matches[c] || 0}/${refs}`).join(", ")));
    }
  };
  for (const name of ["columns", "rows", "status", "changed_count", "total", "notes", "shade", "has_logprobs", "title"]) {
    on(`change:${name}`, draw);
  }
  draw();
  return off;
}
export default { render };
