"""Unloading sessions and explaining out-of-memory errors (filled in by the faults issue)."""

from __future__ import annotations


def explain_oom(exc: BaseException, where: str):
    """A QloraOOMError for memory errors, else None."""
    return None
