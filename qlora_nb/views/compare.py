"""The side-by-side comparison widget: base and adapter columns, streamed, diffs marked.

It is a subscriber of ``session.events`` (the engine never imports it). Token
events arrive once per generated token; state is pushed to the front end at
most every ``interval`` seconds (and always when a row or the comparison ends),
so a long table does not flood the comm channel.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import traitlets

from .base import QloraWidget, asset, esm


def compare_title(columns: list[str]) -> str:
    """'base vs default', or 'base vs 3 adapters' (never 'adapted' when there are several)."""
    others = [c for c in columns if c != "base"]
    if not others:
        return "base"
    return f"base vs {others[0]}" if len(others) == 1 else f"base vs {len(others)} adapters: {', '.join(others)}"


class CompareWidget(QloraWidget):
    """Columns side by side (base + adapters), one row per prompt, with the count of changed prompts."""

    _esm = esm("compare.js")
    SESSION_FREE = ("from_result", "for_session", "on_event", "show_result")  # shows a result; holds no session
    _css = asset("qlora.css")
    title = traitlets.Unicode("comparison").tag(sync=True)  # named after the columns once they are known
    columns = traitlets.List(traitlets.Unicode()).tag(sync=True)
    rows = traitlets.List().tag(sync=True)
    notes = traitlets.List(traitlets.Unicode()).tag(sync=True)
    changed_count = traitlets.Int(0).tag(sync=True)
    total = traitlets.Int(0).tag(sync=True)
    status = traitlets.Unicode("waiting").tag(sync=True)  # waiting | running | done | stopped
    has_logprobs = traitlets.Bool(False).tag(sync=True)
    shade = traitlets.Bool(True).tag(sync=True)  # the user's toggle for log-prob shading

    def __init__(self, interval: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.interval = interval
        self._rows: list[dict[str, Any]] = []
        self._last_push = 0.0
        self._unsubscribe = None

    # ------------------------------------------------------------ building
    @classmethod
    def from_result(cls, result) -> CompareWidget:
        w = cls()
        w.show_result(result.to_event())
        return w

    @classmethod
    def for_session(cls, session, **kwargs: Any) -> CompareWidget:
        """A widget that follows the next comparison of ``session`` and then stops listening."""
        w = cls(**kwargs)
        w._unsubscribe = session.events.subscribe(w.on_event)
        return w

    # -------------------------------------------------------------- events
    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "compare_begin":
            self._rows = [{"prompt": p, "columns": {c: {"text": ""} for c in event.get("columns", [])},
                           "changed": False, "diverge_at": None, "done": False}
                          for p in event.get("prompts", [])]
            self.has_logprobs = bool((event.get("options") or {}).get("logprobs"))
            with self.hold_sync():
                self.columns = list(event.get("columns", []))
                self.title = compare_title(self.columns)
                self.notes = list(event.get("notes", []))
                self.total = len(self._rows)
                self.changed_count = 0
                self.status = "running"
                self._push(force=True)
        elif kind == "compare_token" and self._rows:
            cell = self._rows[event["row"]]["columns"].setdefault(event["column"], {})
            cell["text"] = event.get("text", "")
            self._push()
        elif kind == "compare_row" and self._rows:
            self._rows[event["row"]] = {**event["record"], "done": True}
            self.changed_count = sum(1 for r in self._rows if r.get("changed"))
            self._push(force=True)
        elif kind == "compare_end":
            self.show_result(event["result"])
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None

    def show_result(self, state: dict[str, Any]) -> None:
        """Show a finished comparison (``CompareResult.to_event()``)."""
        self._rows = [{**r, "done": True} for r in state.get("rows", [])]
        with self.hold_sync():
            self.columns = list(state.get("columns", []))
            self.title = compare_title(self.columns)
            self.notes = list(state.get("notes", []))
            self.total = int(state.get("total", len(self._rows)))
            self.changed_count = int(state.get("changed_count", 0))
            self.has_logprobs = bool((state.get("options") or {}).get("logprobs"))
            self.status = "done"
            self._push(force=True)

    def _push(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_push >= self.interval:
            self._last_push = now
            self.rows = copy.deepcopy(self._rows)  # a new object, so traitlets sees a change and syncs it

    # ---------------------------------------------------------------- text
    def text(self) -> str:
        from ..engine.generation.compare_result import render_text

        return render_text({"columns": self.columns, "rows": self._rows, "notes": self.notes,
                            "changed_count": self.changed_count, "total": self.total})
