"""The one error type a user sees, and helpers that name the place that went wrong.

Every check in the toolkit raises :class:`QloraError` with a message that says
*what* was wrong, *where* (file, row, field or flag) and *what would fix it*.
The IPython extension renders it as one paragraph without a traceback, so a
notebook user reads the cause instead of a stack of library frames.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class QloraError(Exception):
    """A user-facing error: one paragraph, no traceback needed to act on it.

    ``where`` names the file/row/field/flag, ``hint`` says what is accepted or
    what to do next. ``str()`` joins them into the paragraph users read.
    """

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        parts = [f"{self.where}: {self.message}" if self.where else self.message]
        if self.hint:
            parts.append(self.hint)
        return " ".join(p.rstrip() for p in parts)


class QloraWarning(UserWarning):
    """A setting that works but probably does not do what was meant (e.g. a LoRA rank above a layer's size)."""


class QloraOOMError(QloraError):
    """Out of memory during load or training, caught and explained."""


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates closest to ``word``, for "did you mean" hints."""
    return difflib.get_close_matches(str(word), [str(c) for c in candidates], n=n, cutoff=0.5)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A hint listing close matches (or all accepted values when none is close)."""
    cands = sorted({str(c) for c in candidates})
    matches = close_matches(word, cands)
    if matches:
        return "Did you mean " + " or ".join(repr(m) for m in matches) + "?"
    shown = ", ".join(cands[:25]) + (" …" if len(cands) > 25 else "")
    return f"Accepted: {shown}."


def unknown_key(kind: str, key: str, accepted: Iterable[str], where: str | None = None) -> QloraError:
    """Error for an option/column/alias that does not exist, with close matches."""
    return QloraError(f"unknown {kind} {key!r}.", where=where, hint=did_you_mean(key, accepted))
