"""Reading one run folder's JSON files defensively: whatever is in them, the listing gets types it can show.

A run folder can be half-written (an interrupted save), hand-edited, or copied from another tool: a
``train_config.json`` that is a list, a ``log_history`` entry without a step or with a text loss. Each reader
here returns what can be used and appends a note (shown on the run's row) saying what was left out and why;
none raises. Kept apart from :mod:`.runs` so the listing's logic reads without the type checks.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

# log_history values a curve or the listing uses as numbers
NUMERIC_LOGS = ("loss", "eval_loss", "learning_rate", "eval_metric", "epoch")


def int_or_none(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def number_or_none(v: Any) -> float | None:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def read_json(path: Path, notes: list[str]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # half-written (interrupted save, full disk) or unreadable
        notes.append(f"{path.name} could not be read ({type(exc).__name__})")
        return None


def checkpoints(folder: Path) -> list[Path]:
    found = []
    for p in folder.glob("checkpoint-*"):
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found, reverse=True)]


def describe(value: Any) -> str:
    if isinstance(value, dict):
        kind = type(value.get("train")).__name__
        keys = ", ".join(map(str, list(value)[:5]))
        return f"its 'train' is a {kind}" if "train" in value else f"it has no 'train' (keys: {keys or 'none'})"
    return "it holds null" if value is None else f"it holds a {type(value).__name__}"


def section(config: Any, key: str, notes: list[str]) -> dict[str, Any]:
    """``train_config.json``'s ``key`` section as a dict; any other type is noted and read as empty."""
    value = (config or {}).get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        notes.append(f"train_config.json's {key!r} is a {type(value).__name__}, not a dict: left out")
        return {}
    return dict(value)


def text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def clean_history(raw: Any, notes: list[str]) -> list[dict[str, Any]]:
    """``log_history`` entries a curve can use: dicts with an int ``step`` and numbers where numbers belong.

    A hand-edited or foreign ``trainer_state.json`` must not take the listing down: each bad entry is left out,
    and the run's row gets one note saying how many and why (the first three).
    """
    if raw is None:
        return []
    if not isinstance(raw, list):
        notes.append(f"trainer_state.json's log_history is a {type(raw).__name__}, not a list: no curve")
        return []
    kept, why = [], []
    for i, h in enumerate(raw):
        problem = None
        if not isinstance(h, dict):
            problem = f"entry {i} is a {type(h).__name__}"
        elif "step" not in h:
            problem = f"entry {i} has no step"
        elif not isinstance(h["step"], int) or isinstance(h["step"], bool):
            problem = f"entry {i} has step {h['step']!r}"
        else:
            bad = next((k for k in NUMERIC_LOGS if k in h and h[k] is not None and not is_number(h[k])), None)
            if bad is not None:
                problem = f"entry {i} has {bad} {h[bad]!r}"
        if problem is None:
            kept.append(h)
        else:
            why.append(problem)
    if why:
        notes.append(f"log_history: {len(why)} of {len(raw)} entries skipped ({'; '.join(why[:3])}"
                     f"{'; …' if len(why) > 3 else ''})")
    return kept


def mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None
