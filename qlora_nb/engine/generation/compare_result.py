"""What ``%qlora_compare`` / ``Session.compare`` return: one record per prompt, and its plain-text form.

The text form belongs to the result (``print(result)`` works from a script with
no view installed), the way ``Ledger`` and ``Plan`` print themselves; the
compare widget reuses :func:`render_text` for its ``text/plain`` fallback.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import Any

from ..model.adapters import BASE

_RESERVED = {"prompt", "formatted", "reference", "base", "base_ids", "adapted", "adapted_ids", "adapter",
             "diverge_at", "changed", "columns"}


class CompareResult(list):
    """A list of records, one per prompt.

    Each record holds ``prompt``, ``formatted`` (what the model saw) and its
    ``prompt_ids``, ``base``,
    ``base_ids``, ``adapted``/``adapted_ids`` (the first adapter column, the
    active adapter unless ``adapters`` says otherwise), one key per adapter name
    (plus ``<name>_ids``), ``diverge_at`` (first token index where the adapted
    output differs from the base, None when equal), ``changed`` (any adapter
    column differs) and ``columns`` (per column: text, ids, tokens, diff mask,
    diverge_at, source, optional ``logprob_delta``). ``notes`` explain left-out columns. An attached GGUF is
    its own column (``source`` "gguf"): ``adapter``/``adapted``/``diverge_at``/``changed`` never speak of it.
    """

    def __init__(self, records: list[dict[str, Any]], columns: list[str], options: dict[str, Any],
                 notes: list[str]) -> None:
        super().__init__(records)
        self.columns = columns
        self.options = options
        self.notes = notes

    @property
    def adapters(self) -> list[str]:
        return [c for c in self.columns if c != BASE]

    @property
    def changed_count(self) -> int:
        return sum(1 for r in self if r["changed"])

    def to_pandas(self):
        import pandas as pd

        rows = []
        for r in self:
            row = {"prompt": r["prompt"], BASE: r[BASE]}
            for c in self.adapters:
                row[c] = r["columns"][c]["text"]
            row.update(diverge_at=r["diverge_at"], changed=r["changed"])
            rows.append(row)
        return pd.DataFrame(rows, columns=["prompt", *self.columns, "diverge_at", "changed"])

    def to_event(self) -> dict[str, Any]:
        """JSON-safe form for widgets."""
        return {"columns": list(self.columns), "options": dict(self.options), "notes": list(self.notes),
                "rows": [_row_event(r) for r in self], "changed_count": self.changed_count, "total": len(self)}

    def text(self, width: int = 100) -> str:
        return render_text(self.to_event(), width=width)

    def __str__(self) -> str:
        return self.text()

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(self.text())


def _row_event(record: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("prompt", "formatted", "reference", "diverge_at", "changed")
    return {**{k: record.get(k) for k in keep}, "columns": record["columns"]}


def render_text(state: Mapping[str, Any], width: int = 100) -> str:
    """A plain-text side-by-side view of a comparison (terminal, nbclient, logs)."""
    columns = list(state.get("columns") or [])
    rows = state.get("rows") or []
    total = state.get("total", len(rows))
    lines = [f"{state.get('changed_count', 0)} of {total} prompts changed"]
    lines += [f"note: {n}" for n in state.get("notes") or []]
    for i, row in enumerate(rows):
        lines.append("")
        lines.append(f"[{i}] prompt: {_short(row.get('prompt') or '', width * 2)}")
        texts = []
        for c in columns:
            cell = (row.get("columns") or {}).get(c) or {}
            texts.append(_marked_text(cell))
        lines.append(side_by_side(columns, texts, width))
        cells = row.get("columns") or {}
        files = [c for c in columns if (cells.get(c) or {}).get("source") == "gguf"]
        d = row.get("diverge_at")
        if len(columns) > 1 + len(files):
            lines.append("outputs identical" if not row.get("changed") else
                         f"first difference at token {d}" if d is not None else "changed")
        for c in files:  # an attached GGUF is named as itself, never as "the adapter"
            fd = cells[c].get("diverge_at")
            lines.append(f"{c} (GGUF file): " + ("same as the base" if not cells[c].get("changed") else
                                                  f"differs from the base at token {fd}" if fd is not None
                                                  else "differs from the base"))
    return "\n".join(lines)


def _short(text: str, n: int) -> str:
    text = text.replace("\n", "⏎")
    return text if len(text) <= n else text[: n - 1] + "…"


def _marked_text(cell: Mapping[str, Any]) -> str:
    """The cell's text with ``»`` at its first divergence from the base."""
    tokens = cell.get("tokens")
    d = cell.get("diverge_at")
    if tokens is None or d is None:
        return str(cell.get("text", ""))
    return "".join(tokens[:d]) + "»" + "".join(tokens[d:])


def side_by_side(columns: list[str], texts: list[str], width: int = 100) -> str:
    """Columns of wrapped text joined with `` │ ``."""
    n = max(1, len(columns))
    col_w = max(12, (width - 3 * (n - 1)) // n)
    wrapped = []
    for name, text in zip(columns, texts, strict=True):
        body: list[str] = []
        for para in str(text).split("\n"):
            body += textwrap.wrap(para, col_w, replace_whitespace=False, drop_whitespace=False) or [""]
        wrapped.append([name.upper(), "─" * min(col_w, max(4, len(name)))] + body)
    height = max(len(w) for w in wrapped)
    out = []
    for i in range(height):
        out.append(" │ ".join((w[i] if i < len(w) else "").ljust(col_w) for w in wrapped).rstrip())
    return "\n".join(out)
