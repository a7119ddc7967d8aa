"""One prompt, streamed token by token from the base and from each adapter, on the same weights.

This is the engine call behind the playground (``%qlora_playground``). It is
``compare`` for a single free-text prompt, plus what a person typing prompts
wants to read per column: the tokens as they come, tokens/s and (optionally)
the mean log-probability of the column's own tokens. It reuses the comparison
helpers (:mod:`qlora_nb.engine.generate`, :mod:`qlora_nb.engine.adapters`): the base column runs inside peft's
``disable_adapter()``, each adapter column after ``set_adapter``, the seed is
set before every column, and every flag is restored afterwards, so it is safe
between a Stop and a Resume of a training run.

Events (on ``session.events`` and ``on_event``):

- ``stream_begin`` {prompt, formatted, columns, notes, options}
- ``stream_token`` {column, text, delta, ids, n_tokens}: the whole output so far (idempotent) and the
  text this token added (empty while a multi-byte character is incomplete)
- ``stream_column`` {column, cell}: a finished column (text, ids, tokens, diff against
  the base, diverge_at, n_tokens, seconds, tokens_per_s, mean_logprob)
- ``stream_end`` {result}: :meth:`StreamResult.to_event`
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import GenerateConfig
from .adapters import BASE, evaluating, use_adapter
from .compare_result import side_by_side
from .generate import _generate, _make_streamer, _token_logprobs, choose_columns, diff_mask, diverge_index, token_pieces
from .prompts import encode, format_prompt


@dataclass
class StreamResult:
    """The columns of one streamed prompt (``cells[name]`` holds the per-column numbers)."""

    prompt: str
    formatted: str
    columns: list[str]
    cells: dict[str, dict[str, Any]]
    options: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_event(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "formatted": self.formatted, "columns": list(self.columns),
                "cells": self.cells, "options": dict(self.options), "notes": list(self.notes)}

    def text(self, width: int = 100) -> str:
        return render_stream_text(self.to_event(), width)

    def __str__(self) -> str:
        return self.text()


def column_stats(cell: dict[str, Any]) -> str:
    """``12 tokens · 31 tok/s · mean log p -0.84`` (what each column's header shows)."""
    parts = [f"{cell.get('n_tokens', 0)} tokens"]
    if cell.get("tokens_per_s"):
        parts.append(f"{cell['tokens_per_s']:.0f} tok/s")
    if cell.get("mean_logprob") is not None:
        parts.append(f"mean log p {cell['mean_logprob']:.2f}")
    return " · ".join(parts)


def render_stream_text(state: dict[str, Any], width: int = 100) -> str:
    """Plain-text columns, with ``»`` where a column first departs from the base."""
    columns = list(state.get("columns") or [])
    cells = state.get("cells") or {}
    lines = [f"prompt: {state.get('prompt', '')}"]
    lines += [f"note: {n}" for n in state.get("notes") or []]
    texts, heads = [], []
    for c in columns:
        cell = cells.get(c) or {}
        tokens, d = cell.get("tokens"), cell.get("diverge_at")
        text = str(cell.get("text", ""))
        if tokens is not None and d is not None and c != BASE:
            text = "".join(tokens[:d]) + "»" + "".join(tokens[d:])
        texts.append(f"({column_stats(cell)})\n{text}")
        heads.append(c)
    if columns:
        lines.append(side_by_side(heads, texts, width))
    return "\n".join(lines)


def stream(session, prompt: str, *, columns: list[str] | None = None, logprobs: bool = False,
           on_event: Callable[[dict], None] | None = None, **options: Any) -> StreamResult:
    """Generate ``prompt`` from the base and each chosen adapter, emitting every token as it comes.

    ``columns``: adapter names (default: every trained adapter; the base always
    comes first, as the reference the others are highlighted against).
    ``options`` are :class:`~qlora_nb.config.GenerateConfig` fields
    (``max_new_tokens``, ``sample``, ``temperature``, ``top_p``, ``seed``, ``chat``).
    """
    cfg = GenerateConfig.from_options(options)
    chosen, notes = choose_columns(session, [c for c in (columns or []) if c != BASE])
    p = format_prompt(session, prompt, cfg.chat)
    ids = encode(session, p, cfg.max_new_tokens, "prompt")

    def emit(kind: str, **data: Any) -> None:
        event = session.events.emit(kind, **data)
        if on_event is not None:
            on_event(event)

    opts = {**cfg.to_dict(), "logprobs": logprobs}
    emit("stream_begin", prompt=p.shown, formatted=p.formatted, columns=list(chosen), notes=list(notes), options=opts)
    tok = session.tokenizer
    cells: dict[str, dict[str, Any]] = {}
    with evaluating(session.model) as state:
        for column in chosen:
            def on_token(new_ids, text, delta, _col=column):
                emit("stream_token", column=_col, text=text, delta=delta, ids=list(new_ids), n_tokens=len(new_ids))

            with use_adapter(session.model, column, state):
                started = time.perf_counter()
                out = _generate(session, ids, cfg, _make_streamer(tok, on_token))
                seconds = time.perf_counter() - started
                mean_lp = None
                if logprobs and out:
                    lps = _token_logprobs(session, ids, out)
                    mean_lp = sum(lps) / len(lps)
            base_ids = cells[BASE]["ids"] if column != BASE else out
            cell = {"text": tok.decode(out, skip_special_tokens=True), "ids": out, "tokens": token_pieces(tok, out),
                    "diff": diff_mask(out, base_ids) if column != BASE else [False] * len(out),
                    "diverge_at": diverge_index(out, base_ids) if column != BASE else None,
                    "changed": column != BASE and out != base_ids, "n_tokens": len(out),
                    "seconds": seconds, "tokens_per_s": len(out) / seconds if seconds > 0 else 0.0,
                    "mean_logprob": mean_lp}
            cells[column] = cell
            emit("stream_column", column=column, cell=cell)
    result = StreamResult(p.shown, p.formatted, list(chosen), cells, opts, notes)
    emit("stream_end", result=result.to_event())
    return result
