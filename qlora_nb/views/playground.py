"""The playground: type a prompt, see the base and each adapter answer side by side, token by token.

A subscriber of ``session.events`` around one call of
:meth:`Session.stream <qlora_nb.engine.session.Session.stream>`, the one generation path (the engine
never imports this module).
Every column comes from the same weights in memory (adapters switched or
disabled in place). Tokens are pushed to the front end at most every
``interval`` seconds and whenever a column ends, so a fast model does not flood
the comm channel. Earlier prompts stay listed and can be run again (after more
training, or after ``%qlora_load_adapter``: the column choices are re-read from
the session on every Generate).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import traitlets

from ..config import GenerateConfig
from ..engine.generation.columns import diverge_index, offered_columns
from .base import QloraWidget, esm
from .between_steps import FollowsRuns
from .session_guard import SessionGone, needs_session, unloaded_text
from .workbench import error_text, workbench_css

MAX_HISTORY = 20
# The generation options the playground shows; names, defaults, help and kinds come from GenerateConfig.
GENERATION_OPTIONS = ("max_new_tokens", "sample", "temperature", "top_p", "seed", "logprobs")
UNLOADED = unloaded_text("playground", "to generate with", "%qlora_playground")


def generation_specs() -> list[dict[str, Any]]:
    from ..options import option_specs

    return option_specs(GenerateConfig, GENERATION_OPTIONS)


class Playground(FollowsRuns, QloraWidget):
    """Prompt box, generation options, one streamed column per model (base first), prompt history."""

    _esm = esm("playground.js")
    UNLOADED = UNLOADED
    SESSION_FREE = ("on_event",)
    _css = workbench_css()

    title = traitlets.Unicode("playground").tag(sync=True)
    prompt = traitlets.Unicode("").tag(sync=True)
    specs = traitlets.List().tag(sync=True)  # one control per generation option (GenerateConfig's declarations)
    options = traitlets.Dict().tag(sync=True)
    available = traitlets.List().tag(sync=True)  # adapter names in the session (base is always shown)
    chosen = traitlets.List().tag(sync=True)  # adapters ticked (empty: all trained ones)
    columns = traitlets.List().tag(sync=True)
    cells = traitlets.Dict().tag(sync=True)  # column -> text, ids, tokens, diff, n_tokens, tokens_per_s, ...
    notes = traitlets.List().tag(sync=True)
    history = traitlets.List().tag(sync=True)
    status = traitlets.Unicode("idle").tag(sync=True)  # idle, generating, done, error
    error = traitlets.Unicode("").tag(sync=True)
    _error_from: str | None = None  # "options" (cleared once they are valid) or "generate" (by the next edit)

    def __init__(self, session: Any, *, prompt: str = "", interval: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session = session
        self.interval = interval
        self._cells: dict[str, dict[str, Any]] = {}
        self._last_push = 0.0
        self.title = f"playground · {getattr(getattr(session, 'config', None), 'model', '')}"
        self.specs = generation_specs()
        self.options = {spec["name"]: spec["default"] for spec in self.specs}
        self.prompt = prompt
        try:
            self.refresh_adapters()
        except SessionGone:  # opened on an unloaded session: the panel shows why
            self.available = []
        self.on_msg(self._on_front_msg)
        self.follow_runs(session)

    def _show_waiting(self, text: str) -> None:
        self.status, self.error, self.notes = "waiting", "", [text]

    @needs_session
    def refresh_adapters(self) -> None:
        """Re-read the session's adapters (after ``%qlora_load_adapter`` or more training)."""
        self.available = offered_columns(self.session)  # adapters, then an exported GGUF (--gguf)

    @traitlets.observe("options")
    def _options_changed(self, change: dict[str, Any]) -> None:
        """A value out of range is shown as it is typed, not only at the next Generate."""
        try:
            GenerateConfig.from_options(dict(change["new"]))
        except Exception as exc:  # from a comm message: shown, never raised into the kernel log
            self.error, self._error_from = error_text(exc, "%qlora_playground"), "options"
            return
        if self._error_from == "options":
            self.error, self._error_from = "", None

    @traitlets.observe("prompt")
    def _prompt_changed(self, change: dict[str, Any]) -> None:
        """A failed Generate's message (an empty prompt…) goes once the prompt is edited."""
        if self._error_from == "generate" and self.status != "generating":
            self.error, self._error_from = "", None
            if self.status == "error":
                self.status = "idle"

    # -------------------------------------------------------------- actions
    def _on_front_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """A click always ends in a visible status: no exception leaves a comm handler (issue 25, class 4).

        The front end shows "generating" as soon as Generate is clicked; the ``handled`` message tells it to
        redraw from the kernel's status even when that status did not change (error, then error again).
        """
        if not isinstance(content, dict):
            return
        if content.get("event") == "generate" and self._watch.defer(content):
            return  # a run is going on: answered at its next step boundary (between_steps.py)
        try:
            if content.get("event") == "generate":
                self.generate(content.get("prompt", self.prompt))
            elif content.get("event") == "refresh":
                self.refresh_adapters()
        except Exception as exc:
            self.status, self.error = "error", error_text(exc, "%qlora_playground")
            self._error_from = "generate"
        finally:
            if self.status == "generating":
                self.status = "error"
            self.send({"event": "handled"})

    @needs_session
    def generate(self, prompt: str | None = None) -> Any:
        """Stream ``prompt`` (default: the prompt box) through the base and the chosen adapters."""
        if self.status == "generating":
            return None
        prompt = self.prompt if prompt is None else prompt
        self.prompt = prompt
        if self._error_from == "options":  # still invalid: say so again rather than run with them
            return None
        self.error, self._error_from = "", None
        self.refresh_adapters()
        opts = dict(self.options)
        logprobs = bool(opts.pop("logprobs", False))
        chosen = [c for c in self.chosen if c in self.available]
        self.status = "generating"
        try:
            result = self.session.stream(prompt, columns=chosen or None, logprobs=logprobs, on_event=self.on_event,
                                         **opts)
        except BaseException as exc:
            self.status, self.error = "error", error_text(exc, "%qlora_playground")
            self._error_from = "generate"
            if isinstance(exc, KeyboardInterrupt):
                raise
            return None
        hist = [h for h in self.history if h != prompt]
        self.history = ([prompt] + hist)[:MAX_HISTORY]
        self.status = "done"
        return result

    # --------------------------------------------------------------- events
    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "stream_begin":
            self._cells = {c: {"text": "", "ids": [], "pieces": [], "n_tokens": 0, "done": False}
                           for c in event["columns"]}
            with self.hold_sync():
                self.columns = list(event["columns"])
                self.notes = list(event.get("notes") or [])
                self._push(force=True)
        elif kind == "stream_token":
            cell = self._cells.setdefault(event["column"], {})
            pieces = cell.setdefault("pieces", [])
            if event["n_tokens"] == len(pieces) and pieces:  # the end flush of an unfinished character
                pieces[-1] += event.get("delta", "")
            else:
                pieces.append(event.get("delta", ""))
            cell.update(text=event["text"], ids=event["ids"], n_tokens=event["n_tokens"])
            base = self._cells.get("base", {})
            if event["column"] != "base" and base.get("ids"):  # live: where this column left the base so far
                ids, base_ids = event["ids"], base["ids"]
                if not base.get("done"):  # the columns fill together: compare only what both have written
                    ids = ids[:len(base_ids)]
                cell["diverge_at"] = diverge_index(ids, base_ids, partial=True)
            self._push()
        elif kind == "stream_column":
            self._cells[event["column"]] = {**event["cell"], "done": True}
            self._push(force=True)

    def _push(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_push >= self.interval:
            self._last_push = now
            self.cells = copy.deepcopy(self._cells)

    # ---------------------------------------------------------------- text
    def text(self) -> str:
        from ..engine.generation.stream import render_stream_text

        if not self.columns:
            return f"{self.title}: type a prompt and press Generate (Python: playground.generate('...'))."
        return render_stream_text({"prompt": self.prompt, "columns": self.columns, "cells": self._cells,
                                   "notes": self.notes})

