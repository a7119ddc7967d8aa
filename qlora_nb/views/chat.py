"""The chat playground: one message box, one multi-turn column per model (the base and each adapter), side by side.

A subscriber of ``session.events`` around :func:`qlora_nb.engine.generation.chat.chat` (the engine never imports this module).
The widget keeps the turns (the user's messages and every column's replies) and builds each column's conversation
from them before every reply:

- **same history**: every column sees the first column's earlier answers, so the next reply is an A/B on identical
  context;
- **own history**: each column continues its own conversation.

Regenerate, edit-and-resend and clear act on the turns; "Copy as cell" gives the ``session.chat(...)`` call that
reproduces the last reply. A tokenizer without a chat template gets completion mode (one prompt continued by every
column), with a note saying why.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import traitlets

from ..command_options import PlaygroundOptions
from ..config import SESSION_NAME, GenerateConfig
from ..engine.generation.columns import offered_columns
from ..errors import QloraError
from .base import QloraWidget, asset, esm
from .between_steps import FollowsRuns
from .session_guard import SessionGone, needs_session, unloaded_text
from .workbench import error_text, workbench_css

OPTION_NAMES = ("max_new_tokens", "sample", "temperature", "top_p", "seed")


def _defaults() -> dict[str, Any]:
    d = GenerateConfig()
    return {name: getattr(d, name) for name in OPTION_NAMES}


def chat_css() -> str:
    return workbench_css() + "\n" + asset("chat.css").read_text(encoding="utf-8")


class Chat(FollowsRuns, QloraWidget):
    """System prompt, message box, history toggle, one streamed multi-turn column per model (base first)."""

    UNLOADED = unloaded_text("chat", "to reply with", "%qlora_playground --chat")
    SESSION_FREE = ("clear", "on_event", "to_code")

    _esm = esm("chat.js")
    _css = chat_css()

    title = traitlets.Unicode("chat").tag(sync=True)
    mode = traitlets.Unicode("chat").tag(sync=True)  # chat or completion
    can_chat = traitlets.Bool(True).tag(sync=True)
    history = traitlets.Unicode("same").tag(sync=True)  # same or own
    system = traitlets.Unicode("").tag(sync=True)
    prompt = traitlets.Unicode("").tag(sync=True)  # the message box
    options = traitlets.Dict().tag(sync=True)
    available = traitlets.List().tag(sync=True)
    chosen = traitlets.List().tag(sync=True)  # adapters ticked (empty: every trained one)
    columns = traitlets.List().tag(sync=True)
    turns = traitlets.List().tag(sync=True)  # [{user, cells: {column: {text, tokens, diff, n_tokens, done, ...}}}]
    rendered = traitlets.Dict().tag(sync=True)  # column -> the last prompt, as apply_chat_template rendered it
    code = traitlets.Unicode("").tag(sync=True)
    notes = traitlets.List().tag(sync=True)
    status = traitlets.Unicode("idle").tag(sync=True)  # idle, generating, done, error
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(self, session: Any, *, mode: str | None = None, history: str = PlaygroundOptions.history,
                 system: str = "", prompt: str = "", session_name: str = SESSION_NAME, interval: float = 0.1,
                 **kwargs: Any) -> None:
        from ..engine.generation.chat import NO_TEMPLATE, has_chat_template

        super().__init__(**kwargs)
        history = PlaygroundOptions.from_options({"history": history}).history  # its one declaration checks it
        if mode not in (None, "chat", "completion"):
            raise QloraError(f"mode must be 'chat' or 'completion', got {mode!r}.", where="mode")
        self.session, self.session_name, self.interval = session, session_name, interval
        self.result: Any = None
        self._turns: list[dict[str, Any]] = []
        self._last_push = 0.0
        self.can_chat = has_chat_template(session.tokenizer)
        notes = []
        if not self.can_chat:
            notes.append(NO_TEMPLATE[:1].upper() + NO_TEMPLATE[1:-1] + ": the playground is in completion mode "
                         "(the text you type is continued as written, formatted as training formatted prompts).")
        self.mode = "chat" if self.can_chat and mode != "completion" else "completion"
        self.history, self.system, self.prompt, self.notes = history, system, prompt, notes
        self.title = f"chat · {getattr(getattr(session, 'config', None), 'model', '')}"
        self.options = _defaults()
        try:
            self.refresh_adapters()
        except SessionGone:  # opened on an unloaded session: the panel shows why
            self.available = []
        self.observe(self._check_options, names="options")
        self.observe(self._on_prompt, names="prompt")
        self.observe(self._on_mode, names="mode")
        self.on_msg(self._on_front_msg)
        self.follow_runs(session)

    def _show_waiting(self, text: str) -> None:
        self.status, self.error = "waiting", ""
        self.notes = [*(n for n in self.notes if not n.startswith("waiting for training")), text]

    # -------------------------------------------------------------- state
    @needs_session
    def refresh_adapters(self) -> None:
        self.available = offered_columns(self.session)  # adapters, then an exported GGUF (--gguf)

    def _check_options(self, change: dict) -> None:
        from ..engine.generation.chat import ChatOptions

        try:
            ChatOptions.from_options(change["new"])
        except QloraError as exc:
            self.error = str(exc)
            return
        if self.error.startswith("chat option"):
            self.error = ""

    def _on_prompt(self, change: dict) -> None:
        if change["new"].strip() and self.error.startswith("message box"):
            self.error = ""

    def _on_mode(self, change: dict) -> None:
        if change["new"] == "chat" and not self.can_chat:
            self.mode = "completion"  # the note says why
        elif change["new"] != change["old"]:
            self.clear()  # a completion is no chat turn, and the other way round

    def _on_front_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        event = content.get("event")
        if event in ("send", "regenerate", "edit", "clear") and self._watch.defer(content):
            return  # a run is going on: answered at its next step boundary (between_steps.py)
        self.notes = [n for n in self.notes if not n.startswith("waiting for training")]
        try:
            self._handle(event, content)
        except SessionGone:  # the guard already put its paragraph in the panel
            pass

    def _handle(self, event: Any, content: dict) -> None:
        if event == "send":
            self.send(content.get("text", self.prompt))
        elif event == "regenerate":
            self.regenerate()
        elif event == "edit":
            self.edit(int(content.get("index", -1)), str(content.get("text", "")))
        elif event == "clear":
            self.clear()
        elif event == "refresh":
            self.refresh_adapters()

    # -------------------------------------------------------------- actions
    @needs_session
    def send(self, text: str | None = None) -> Any:
        """Send ``text`` (default: the message box) to every column; returns the ChatResult (None on an error)."""
        text = self.prompt if text is None else text
        if not isinstance(text, str) or not text.strip():
            self.status, self.error = "error", ("message box: the message is empty. Type what the user says, then "
                                                "press Send.")
            return None
        before = list(self._turns)
        if self.mode == "completion":
            self._turns = []
        self._turns.append({"user": text, "cells": {}})
        self.prompt = ""
        return self._reply(before, text)

    @needs_session
    def regenerate(self) -> Any:
        """Generate the last turn's replies again (after more training, other options or another seed)."""
        if not self._turns:
            self.status, self.error = "error", "regenerate: there is no reply yet. Send a message first."
            return None
        before = copy.deepcopy(self._turns)
        self._turns[-1]["cells"] = {}
        return self._reply(before)

    @needs_session
    def edit(self, index: int, text: str) -> Any:
        """Replace user message ``index`` with ``text``, drop the turns after it and reply again."""
        if not 0 <= index < len(self._turns):
            self.status, self.error = "error", (f"edit: there is no message {index} (this chat has "
                                                f"{len(self._turns)}).")
            return None
        if not isinstance(text, str) or not text.strip():
            self.status, self.error = "error", f"edit: message {index} is empty. Type its new text."
            return None
        before = list(self._turns)
        self._turns = self._turns[:index] + [{"user": text, "cells": {}}]
        return self._reply(before)

    def clear(self) -> None:
        """Start a new conversation (the system prompt and the options stay)."""
        self._turns, self.result = [], None
        with self.hold_sync():
            self.turns, self.rendered, self.code, self.error, self.status = [], {}, "", "", "idle"

    @needs_session
    def conversations(self) -> dict[str, list[dict[str, str]]] | list[dict[str, str]]:
        """What the next reply is generated from: one message list (same history) or one per column (own)."""
        columns = self._columns()
        convs = {c: self._conversation(c, columns) for c in columns}
        if self.history == "same":
            return convs[columns[0]]
        return convs

    def _columns(self) -> list[str]:
        from ..engine.generation.columns import choose_columns

        self.refresh_adapters()
        return choose_columns(self.session, [c for c in self.chosen if c in self.available])[0]

    def _conversation(self, column: str, columns: list[str]) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system}] if self.system.strip() else []
        for turn in self._turns[:-1]:
            source = column if self.history == "own" and column in turn["cells"] else columns[0]
            reply = turn["cells"].get(source) or next(iter(turn["cells"].values()), {"text": ""})
            msgs += [{"role": "user", "content": turn["user"]}, {"role": "assistant", "content": reply["text"]}]
        return [*msgs, {"role": "user", "content": self._turns[-1]["user"]}]

    def _reply(self, before: list[dict[str, Any]], text_back: str | None = None) -> Any:
        """Generate the last turn; on an error the turns (and the message box) are put back as they were."""
        from ..engine.generation.chat import chat, complete

        if self.status == "generating":
            self._turns = before
            return None
        self.error = ""
        try:
            opts = dict(self.options)
            adapters = [c for c in self.chosen if c in self.available] or None
            self.status = "generating"
            if self.mode == "completion":
                result = complete(self.session, self._turns[-1]["user"], adapters=adapters, on_event=self.on_event,
                                  **opts)
            else:
                convs = self.conversations()
                own = isinstance(convs, dict)
                result = chat(self.session, convs, adapters=None if own else adapters, on_event=self.on_event,
                              **opts)
        except BaseException as exc:
            self._turns = before
            with self.hold_sync():
                self.status, self.error = "error", error_text(exc, "%qlora_playground")
                self.turns = copy.deepcopy(self._turns)
                if text_back is not None:
                    self.prompt = text_back
            if isinstance(exc, KeyboardInterrupt):
                raise
            return None
        self.result = result
        with self.hold_sync():
            self.rendered = dict(result.prompts)
            self.code = self.to_code()
            self.status = "done"
        return result

    # --------------------------------------------------------------- events
    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        cells = self._turns[-1]["cells"] if self._turns else {}
        if kind == "chat_begin":
            cells.clear()
            cells.update({c: {"text": "", "pieces": [], "n_tokens": 0, "done": False} for c in event["columns"]})
            with self.hold_sync():
                self.columns = list(event["columns"])
                self.notes = [n for n in self.notes if n.startswith("This model")] + list(event.get("notes") or [])
                self.rendered = dict(event.get("prompts") or {})
                self._push(force=True)
        elif kind == "chat_token":
            cell = cells.setdefault(event["column"], {"pieces": []})
            pieces = cell.setdefault("pieces", [])
            if event["n_tokens"] == len(pieces) and pieces:
                pieces[-1] += event.get("delta", "")
            else:
                pieces.append(event.get("delta", ""))
            cell.update(text=event["text"], n_tokens=event["n_tokens"])
            self._push()
        elif kind == "chat_column":
            cell = {k: v for k, v in event["cell"].items() if k != "ids"}
            cells[event["column"]] = {**cell, "done": True}
            self._push(force=True)

    def _push(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_push >= self.interval:
            self._last_push = now
            self.turns = copy.deepcopy(self._turns)

    # ---------------------------------------------------------------- code
    def to_code(self) -> str:
        """The ``session.chat(...)`` call that reproduces the last reply (completion mode: ``compare``)."""
        if not self._turns:
            return ""
        opts = {k: v for k, v in _coerced(self.options).items() if _defaults().get(k) != v}
        extra = "".join(f", {k}={v!r}" for k, v in opts.items())
        if self.mode == "completion":
            return f"{self.session_name}.compare({self._turns[-1]['user']!r}, chat=False{extra})"
        convs = self.conversations()
        adapters = [c for c in self.chosen if c in self.available]
        if not isinstance(convs, dict) and adapters:
            extra = f", adapters={adapters!r}" + extra
        return f"reply = {self.session_name}.chat({_messages_code(convs)}{extra})\nprint(reply)"

    # ---------------------------------------------------------------- text
    def text(self) -> str:
        if self.result is not None:
            own = "".join(f"note: {n}\n" for n in self.notes if n not in self.result.notes)  # the no-template one
            return f"{self.title} ({len(self._turns)} turn{'s' if len(self._turns) != 1 else ''})\n{own}{self.result}"
        note = f" {self.notes[0]}" if self.notes else ""
        return f"{self.title}: type a message and press Send (Python: .send('...') on this widget).{note}"


def _messages_code(convs: Any) -> str:
    """Messages as Python, one message a line (JSON strings are Python strings; roles and text only)."""
    def lines(msgs: list[dict[str, str]], indent: str) -> str:
        return "[\n" + "".join(f"{indent}    {json.dumps(m, ensure_ascii=False)},\n" for m in msgs) + f"{indent}]"

    if isinstance(convs, dict):
        return "{\n" + "".join(f"    {json.dumps(c)}: {lines(m, '    ')},\n" for c, m in convs.items()) + "}"
    return lines(convs, "")


def make_playground(session: Any, prompt: str = "", chat: bool | None = None, **kwargs: Any) -> QloraWidget:
    """The chat (``chat=True``, or None when :func:`~qlora_nb.engine.generation.chat.prefers_chat`) or completion playground."""
    from ..engine.generation.chat import prefers_chat

    if chat is None:
        chat = prefers_chat(session)
    if chat:
        return Chat(session, prompt=prompt, **kwargs)
    from .playground import Playground

    kwargs.pop("history", None)
    kwargs.pop("session_name", None)
    return Playground(session, prompt=prompt, **kwargs)


def _coerced(options: dict[str, Any]) -> dict[str, Any]:
    from ..engine.generation.chat import ChatOptions

    try:
        cfg = ChatOptions.from_options(options)
    except QloraError:
        return dict(options)
    return {k: getattr(cfg, k) for k in OPTION_NAMES}
