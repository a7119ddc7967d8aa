// Playground: a prompt box, generation options, one streamed column per model (base first), tokens that depart
// from the base highlighted, per-column token count / tokens/s / mean log-prob, and the list of earlier prompts.
import { el, divergeText, mount, listen } from "./format.js";


function stats(cell) {
  const parts = [`${cell.n_tokens || 0} tokens`];
  if (cell.done && cell.tokens_per_s) parts.push(`${cell.tokens_per_s.toFixed(1)} tok/s`);
  if (cell.done && cell.mean_logprob !== null && cell.mean_logprob !== undefined) parts.push(`mean log p ${cell.mean_logprob.toFixed(2)}`);
  return parts.join(" · ");
}

function body(column, cell, streaming) {
  const node = el("div", { class: "qn-col-body" });
  const tokens = cell.tokens || cell.pieces;
  if (!tokens) { node.append(cell.text || ""); return node; }
  const d = cell.diverge_at;
  tokens.forEach((piece, i) => {
    // finished columns (the base too, against the first adapter) use the token alignment; while streaming, an
    // adapter column marks what follows the first token that left the base's text so far
    const differs = cell.diff ? !!cell.diff[i] : column !== "base" && d !== null && d !== undefined && i >= d;
    node.append(el("span", { class: differs ? "qn-tok qn-diff" : "qn-tok", "data-diff": differs ? "1" : "0" }, piece));
  });
  if (streaming) node.append(el("span", { class: "qn-cursor" }, "▍"));
  return node;
}

function render({ model, el: host }) {
  const root = el("div", { class: "qn-card qn-playground", "data-testid": "qlora-playground" });
  mount(host, root);
  const { on, off } = listen(model);  // every model listener, removed by the clean-up render returns
  const title = el("span", { class: "qn-title" });
  const status = el("span", { class: "qn-status", "data-testid": "playground-status" });
  const prompt = el("textarea", { class: "qn-input", "data-testid": "playground-prompt", placeholder: "type a prompt…" });
  prompt.value = model.get("prompt") || "";
  const generate = el("button", { class: "qn-btn qn-btn-primary", "data-testid": "playground-generate", textContent: "▶ Generate" });
  const opts = el("div", { class: "qn-row" });
  const picks = el("div", { class: "qn-row", "data-testid": "playground-adapters" });
  const notes = el("div", { class: "qn-muted" });
  const error = el("div", { class: "qn-error", "data-testid": "playground-error" });
  const grid = el("div", { class: "qn-cols" });
  const history = el("ol", { class: "qn-history qn-muted", "data-testid": "playground-history" });
  root.append(el("div", { class: "qn-row" }, title, status), prompt, el("div", { class: "qn-row" }, generate, opts),
    picks, notes, error, grid, el("details", { open: true }, el("summary", { class: "qn-muted" }, "earlier prompts (click to run again)"), history));

  const run = (text) => {
    prompt.value = text;
    model.set("prompt", text); model.save_changes();
    model.send({ event: "generate", prompt: text });
    status.textContent = "generating";
    generate.disabled = true;
  };
  generate.addEventListener("click", () => run(prompt.value));
  // the kernel hears every edit, so a failed Generate's message (an empty prompt) goes once the prompt changes
  prompt.addEventListener("input", () => { model.set("prompt", prompt.value); model.save_changes(); });
  prompt.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey || e.shiftKey)) { e.preventDefault(); run(prompt.value); } });

  // one control per generation option; names, kinds and help come from GenerateConfig's declarations in Python
  function option(spec) {
    const o = model.get("options") || {}, name = spec.name, bool = spec.kind === "bool";
    const input = bool ? el("input", { type: "checkbox", checked: !!o[name], "data-testid": `gen-${name}` })
      : el("input", { type: "text", class: "qn-input", size: 6, value: String(o[name] ?? ""), "data-testid": `gen-${name}` });
    input.addEventListener("change", () => {
      model.set("options", { ...model.get("options"), [name]: bool ? input.checked : input.value });
      model.save_changes();
    });
    return el("label", { class: "qn-muted", title: spec.help }, `${name} `, input);
  }
  opts.append(...(model.get("specs") || []).map(option));

  function drawPicks() {
    const chosen = model.get("chosen") || [];
    picks.replaceChildren(el("span", { class: "qn-muted" }, "columns: base +"));
    for (const name of model.get("available") || []) {
      const box = el("input", { type: "checkbox", checked: !chosen.length || chosen.includes(name) });
      box.addEventListener("change", () => {
        const all = model.get("available") || [];
        const now = all.filter((n) => (n === name ? box.checked : (!chosen.length || chosen.includes(n))));
        model.set("chosen", now.length === all.length ? [] : now); model.save_changes();
      });
      picks.append(el("label", {}, box, ` ${name}`));
    }
  }

  function draw() {
    const st = model.get("status");
    title.textContent = model.get("title");
    status.textContent = st;
    status.setAttribute("data-status", st);
    status.className = `qn-status qn-status-${st === "generating" ? "running" : st === "idle" ? "waiting" : st}`;
    generate.disabled = st === "generating" || st === "waiting";  // waiting: a run is going on (between_steps.py)
    error.textContent = model.get("error") || "";
    notes.replaceChildren(...(model.get("notes") || []).map((n) => el("div", {}, n)));
    const columns = model.get("columns") || [], cells = model.get("cells") || {};
    grid.style.gridTemplateColumns = `repeat(${Math.max(1, columns.length)}, minmax(0, 1fr))`;
    grid.replaceChildren(...columns.map((c) => {
      const cell = cells[c] || {};
      const badge = c === "base" || !cell.done ? "" : cell.changed ? divergeText(cell.diverge_at) : "same as base";
      return el("div", { class: "qn-col", "data-testid": "playground-column", "data-column": c,
        "data-n-tokens": String(cell.n_tokens || 0), "data-done": cell.done ? "1" : "0" },
        el("div", { class: "qn-col-head" }, el("b", {}, c), el("span", { class: "qn-badge qn-badge-diff" }, badge)),
        el("div", { class: "qn-muted", "data-testid": "playground-stats" }, stats(cell)),
        body(c, cell, !cell.done && st === "generating"));
    }));
    history.replaceChildren(...(model.get("history") || []).map((h) => {
      const li = el("li", { title: "run again", "data-testid": "playground-history-item" }, h);
      li.addEventListener("click", () => run(h));
      return li;
    }));
  }
  on("msg:custom", (msg) => { if (msg && msg.event === "handled") draw(); });  // the kernel's status wins
  on("change:prompt", () => { if (document.activeElement !== prompt) prompt.value = model.get("prompt"); });
  for (const name of ["available", "chosen"]) on(`change:${name}`, drawPicks);
  for (const name of ["status", "columns", "cells", "notes", "history", "error", "title"]) on(`change:${name}`, draw);
  model.send({ event: "refresh" });
  drawPicks(); draw();
  return off;
}
export default { render };
