"""The training rows every contender reads (one JSONL file) and the prompts the comparison generates from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def prepare_data(data: str | None, work: Path) -> tuple[Path, str, list[dict[str, Any]]]:
    """``(path, description, rows)``: ``data`` as given, or the shipped demo data written to ``work``.

    The demo data ships inside the package, so there is no stand-in: a missing
    demo file is a broken install, and the run stops saying so.
    """
    if data:
        from common import read_rows

        return Path(data), f"{data}", read_rows(data)
    from qlora_nb.data.load import load_demo

    rows = [dict(r) for r in load_demo().rows]
    path = work / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, "the shipped demo data (qlora_nb/data/demo/train.jsonl)", rows


def prompt_texts(rows: list[dict[str, Any]], k: int) -> list[str]:
    """Free-text prompts for compare: the row's input (or instruction / first user message)."""
    out = []
    for r in rows[:k]:
        if "messages" in r:
            out.append(next(m["content"] for m in r["messages"] if m.get("role") == "user"))
        else:
            out.append(str(r.get("input") or r.get("instruction") or r.get("prompt") or next(iter(r.values()))))
    return out
