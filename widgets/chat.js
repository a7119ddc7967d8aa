// Chat playground: a system prompt and one message box shared by all columns, one multi-turn column per model
// (base first) streaming its reply, same/own history, regenerate, edit & resend, clear, the rendered prompt and
// "Copy as cell". Python (qlora_nb/views/chat.py) keeps the turns and builds each column's conversation.
import { el, mount } from "./format.js";

function stats(cell) {
  if (!cell) return "";
  const parts = [`${cell.n_tokens || 0} tokens`];
  if (cell.done && cell.tokens_per_s) parts.push(`${cell.tokens_per_s.toFixed(1)} tok/s`);
  if (cell.done && cell.prompt_tokens) parts.push(`prompt ${cell.prompt_tokens} tokens`);
  return parts.join(" · ");
}

// A reply, token by token; tokens that differ from the other side (base vs first adapter) are marked once done.
function replyBody(column, cell, streaming) {
  const node = el("div", { class: "qn-chat-text" });
  const tokens = cell.tokens || cell.pieces;
  if (!tokens) node.append(cell.text || "");
  else tokens.forEach((piece, i) => {
    const differs = !!(cell.done && cell.diff && cell.diff[i]);
    node.append(el("span", { class: differs ? "qn-tok qn-diff" : "qn-tok", "data-diff": differs ? "1" : "0" }, piece));
  });
  if (streaming) node.append(el("span", { class: "qn-cursor" }, "▍"));
  return node;
}

function render({ model, el: host }) {
  const root = el("div", { class: "qn-card qn-chat", "data-testid": "qlora-chat" });
  mount(host, root);
  const q = (tag, attrs, ...kids) => el(tag, attrs, ...kids);
  const title = q("span", { class: "qn-title" });
  const status = q("span", { class: "qn-status", "data-testid": "chat-status" });
  const modeChat = q("button", { class: "qn-btn qn-btn-small", "data-testid": "chat-mode-chat", textContent: "chat" });
  const modeCompletion = q("button", { class: "qn-btn qn-btn-small", "data-testid": "chat-mode-completion", textContent: "completion" });
  const histSame = q("button", { class: "qn-btn qn-btn-small", "data-testid": "chat-history-same", textContent: "same history",
    title: "every column continues from the first column's answers: the next reply is an A/B on identical context" });
  const histOwn = q("button", { class: "qn-btn qn-btn-small", "data-testid": "chat-history-own", textContent: "own history",
    title: "each column continues its own conversation" });
  const histBox = q("span", { class: "qn-chat-toggle" }, histSame, " ", histOwn);
  const opts = q("div", { class: "qn-row" });
  const picks = q("div", { class: "qn-row", "data-testid": "chat-adapters" });
  const notes = q("div", { class: "qn-muted", "data-testid": "chat-notes" });
  const error = q("div", { class: "qn-error", "data-testid": "chat-error" });
  const system = q("input", { type: "text", class: "qn-input qn-chat-system", "data-testid": "chat-system",
    placeholder: "system prompt (optional, shared by every column)" });
  const systemRow = q("label", { class: "qn-row qn-chat-system-row" }, q("span", { class: "qn-muted" }, "system"), system);
  const grid = q("div", { class: "qn-cols", "data-testid": "chat-grid" });
  const input = q("textarea", { class: "qn-input", "data-testid": "chat-input", placeholder: "message… (Shift+Enter or Ctrl+Enter sends)" });
  const send = q("button", { class: "qn-btn qn-btn-primary", "data-testid": "chat-send", textContent: "▶ Send" });
  const regen = q("button", { class: "qn-btn", "data-testid": "chat-regenerate", textContent: "↻ Regenerate last" });
  const clear = q("button", { class: "qn-btn", "data-testid": "chat-clear", textContent: "Clear" });
  const copy = q("button", { class: "qn-btn", "data-testid": "chat-copy", textContent: "Copy as cell" });
  const code = q("pre", { class: "qn-code", "data-testid": "chat-code", style: "display:none" });
  const prompts = q("div", { "data-testid": "chat-rendered-list" });
  const shown = q("details", { "data-testid": "chat-prompt" }, q("summary", { class: "qn-muted" }, "show the rendered prompt"), prompts);
  root.append(q("div", { class: "qn-row" }, title, status, q("span", { class: "qn-chat-toggle" }, modeChat, " ", modeCompletion), histBox),
    opts, picks, notes, systemRow, grid, input, q("div", { class: "qn-row" }, send, regen, clear, copy), error, code, shown);

  const saveSet = (name, value) => { model.set(name, value); model.save_changes(); };
  const busy = () => ["generating", "waiting"].includes(model.get("status"));  // waiting: a run is going on
  const sendNow = () => {
    if (busy()) return;
    saveSet("prompt", input.value);
    model.send({ event: "send", text: input.value });
    input.value = "";
    status.textContent = "generating"; send.disabled = true;
  };
  send.addEventListener("click", sendNow);
  input.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey || e.shiftKey)) { e.preventDefault(); sendNow(); } });
  input.addEventListener("input", () => saveSet("prompt", input.value));
  system.addEventListener("change", () => saveSet("system", system.value));
  regen.addEventListener("click", () => { if (!busy()) model.send({ event: "regenerate" }); });
  clear.addEventListener("click", () => { if (!busy()) model.send({ event: "clear" }); });
  copy.addEventListener("click", () => {
    const text = model.get("code") || "";
    code.style.display = text ? "" : "none";
    code.textContent = text || "";
    if (text && navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
    copy.textContent = text ? "Copied (also shown below)" : "Nothing to copy yet";
  });
  modeChat.addEventListener("click", () => saveSet("mode", "chat"));
  modeCompletion.addEventListener("click", () => saveSet("mode", "completion"));
  histSame.addEventListener("click", () => saveSet("history", "same"));
  histOwn.addEventListener("click", () => saveSet("history", "own"));

  function option(name, label, kind) {
    const o = model.get("options") || {};
    const box = kind === "bool" ? q("input", { type: "checkbox", checked: !!o[name], "data-testid": `chat-${name}` })
      : q("input", { type: "text", class: "qn-input", size: 5, value: String(o[name] ?? ""), "data-testid": `chat-${name}` });
    box.addEventListener("change", () => saveSet("options", { ...model.get("options"), [name]: kind === "bool" ? box.checked : box.value }));
    return q("label", { class: "qn-muted" }, `${label} `, box);
  }
  opts.append(option("max_new_tokens", "max_new_tokens", "text"), option("sample", "sample (off: greedy)", "bool"),
    option("temperature", "temperature", "text"), option("seed", "seed", "text"));

  function drawPicks() {
    const chosen = model.get("chosen") || [];
    picks.replaceChildren(q("span", { class: "qn-muted" }, "columns: base +"));
    for (const name of model.get("available") || []) {
      const box = q("input", { type: "checkbox", checked: !chosen.length || chosen.includes(name) });
      box.addEventListener("change", () => {
        const all = model.get("available") || [];
        const now = all.filter((n) => (n === name ? box.checked : (!chosen.length || chosen.includes(n))));
        saveSet("chosen", now.length === all.length ? [] : now);
      });
      picks.append(q("label", {}, box, ` ${name}`));
    }
  }

  function userBubble(turn, i, first) {
    const bubble = q("div", { class: "qn-chat-msg qn-chat-user", "data-testid": "chat-turn", "data-role": "user" });
    const head = q("div", { class: "qn-chat-role" }, "you");
    const text = q("div", {}, turn.user);
    if (first && model.get("mode") === "chat") {
      const edit = q("button", { class: "qn-link", "data-testid": "chat-edit", textContent: "edit & resend" });
      edit.addEventListener("click", () => {
        const box = q("textarea", { class: "qn-input", "data-testid": "chat-edit-box" });
        box.value = turn.user;
        const resend = q("button", { class: "qn-btn qn-btn-small", "data-testid": "chat-resend", textContent: "resend" });
        resend.addEventListener("click", () => { if (!busy()) model.send({ event: "edit", index: i, text: box.value }); });
        text.replaceChildren(box, resend);
        box.focus();
      });
      head.append(edit);
    }
    bubble.append(head, text);
    return bubble;
  }

  function draw() {
    const st = model.get("status"), mode = model.get("mode"), history = model.get("history");
    const canChat = model.get("can_chat");
    title.textContent = model.get("title");
    status.textContent = st;
    status.setAttribute("data-status", st);
    status.className = `qn-status qn-status-${st === "generating" ? "running" : st === "idle" ? "waiting" : st}`;
    for (const b of [send, regen, clear]) b.disabled = busy();
    modeChat.disabled = !canChat;
    modeChat.title = canChat ? "multi-turn chat through the tokenizer's chat template" : "this tokenizer has no chat template";
    modeChat.setAttribute("aria-pressed", String(mode === "chat"));
    modeCompletion.setAttribute("aria-pressed", String(mode === "completion"));
    histSame.setAttribute("aria-pressed", String(history === "same"));
    histOwn.setAttribute("aria-pressed", String(history === "own"));
    histBox.style.display = mode === "chat" ? "" : "none";
    systemRow.style.display = mode === "chat" ? "" : "none";
    if (document.activeElement !== system) system.value = model.get("system") || "";
    error.textContent = model.get("error") || "";
    notes.replaceChildren(...(model.get("notes") || []).map((n) => q("div", {}, n)));
    const columns = model.get("columns") || [], turns = model.get("turns") || [];
    root.setAttribute("data-history", history);
    root.setAttribute("data-turns", String(turns.length));
    grid.style.gridTemplateColumns = `repeat(${Math.max(1, columns.length)}, minmax(0, 1fr))`;
    grid.replaceChildren(...columns.map((c, ci) => {
      const last = turns.length ? (turns[turns.length - 1].cells || {})[c] : null;
      const col = q("div", { class: "qn-col", "data-testid": "chat-column", "data-column": c,
        "data-n-tokens": String(last ? last.n_tokens || 0 : 0), "data-done": last && last.done ? "1" : "0" },
        q("div", { class: "qn-col-head" }, q("b", {}, c), q("span", { class: "qn-muted", "data-testid": "chat-stats" }, stats(last))));
      turns.forEach((turn, i) => {
        col.append(userBubble(turn, i, ci === 0));
        const cell = (turn.cells || {})[c];
        if (!cell) return;
        const isLast = i === turns.length - 1;
        // in same-history mode the later turns saw the first column's answer, not this one
        const off = mode === "chat" && history === "same" && ci > 0 && !isLast;
        const bubble = q("div", { class: `qn-chat-msg qn-chat-assistant${off ? " qn-chat-offcontext" : ""}`,
          "data-testid": "chat-turn", "data-role": "assistant", "data-turn": String(i),
          title: off ? `not in the later context: with same history every column continued from ${columns[0]}'s answer` : "" },
        replyBody(c, cell, isLast && !cell.done && st === "generating"));
        col.append(bubble);
      });
      return col;
    }));
    const rendered = model.get("rendered") || {};
    // one block per distinct prompt (with same history every column shares one)
    const groups = [];
    for (const [c, p] of Object.entries(rendered)) {
      const g = groups.find((x) => x.prompt === p);
      if (g) g.columns.push(c); else groups.push({ prompt: p, columns: [c] });
    }
    prompts.replaceChildren(...groups.map((g) => q("div", {},
      q("div", { class: "qn-muted" }, g.columns.length > 1 ? `${g.columns.join(", ")} (one prompt)` : g.columns[0]),
      ...g.columns.map((c, i) => q("pre", { class: "qn-chat-rendered", "data-testid": "chat-rendered", "data-column": c,
        style: i ? "display:none" : "" }, g.prompt)))));
    if (code.style.display !== "none") code.textContent = model.get("code") || "";
  }
  const onPrompt = () => { if (document.activeElement !== input) input.value = model.get("prompt") || ""; };
  const handlers = [["change:prompt", onPrompt], ["change:available", drawPicks], ["change:chosen", drawPicks]];
  for (const name of ["status", "columns", "turns", "notes", "error", "title", "mode", "history", "rendered", "code", "system", "can_chat"]) {
    handlers.push([`change:${name}`, draw]);
  }
  for (const [name, fn] of handlers) model.on(name, fn);
  input.value = model.get("prompt") || "";
  model.send({ event: "refresh" });
  drawPicks(); draw();
  return () => { for (const [name, fn] of handlers) model.off(name, fn); };
}
export default { render };
