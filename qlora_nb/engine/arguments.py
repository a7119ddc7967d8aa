"""Argument checks at the engine's public entry points, so the Python twins fail like the magics.

``qlora.save(None)`` used to reach ``Path(None)`` and raise a 57-line
TypeError; a magic could never pass None, so nothing checked. Each ``Session``
method now checks its arguments' *types* here first (values are checked by the
config dataclasses) and raises the same one-paragraph :class:`QloraError`
naming the argument and what is accepted (issue 15, class 9).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath
from typing import Any

from ..errors import QloraError


def _kind(value: Any) -> str:
    return "None" if value is None else f"a {type(value).__name__}"


def require_path(value: Any, where: str, what: str = "a folder path") -> Path:
    """``value`` as a Path: text or a path object, not empty."""
    if isinstance(value, bytes):
        value = os.fsdecode(value)
    if not isinstance(value, (str, PurePath)) or not str(value).strip():
        shown = repr(value) if isinstance(value, str) else _kind(value)
        raise QloraError(f"{where} must be {what}, got {shown}.", where=where,
                         hint="Pass text such as 'adapters/my-run' or a pathlib.Path.")
    return Path(str(value)).expanduser()


def require_optional_name(value: Any, where: str) -> str | None:
    """An adapter name: None (the default) or text."""
    if value is None or (isinstance(value, str) and value.strip()):
        return value
    raise QloraError(f"{where} must be an adapter name (text), got {_kind(value) if not isinstance(value, str) else repr(value)}.",
                     where=where, hint="Omit it for the active adapter, or pass a name such as 'default'.")


def require_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise QloraError(f"{where} must be True or False, got {_kind(value)}.", where=where)


def protected_folders(session: Any) -> list[tuple[Path, str]]:
    """Folders no save/merge/export may replace: the session's base model folder."""
    path = getattr(session, "model_path", None)
    return [(Path(path), "the session's base model folder")] if path else []
