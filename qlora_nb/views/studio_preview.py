"""What the studio's data preview shows: the first rows as training tokenizes them, and the split it will make."""

from __future__ import annotations

import os
from typing import Any

from ..config import TrainConfig
from .workbench import PREVIEW_ROWS


def preview_state(preview: Any, tokenizer: Any, cutoff: int, opts: dict[str, Any]) -> dict[str, Any]:
    """The synced ``preview`` trait for a loaded :func:`qlora_nb.data.preview.load_preview` result."""
    from ..data.split import split_rows
    from ..engine.generation.columns import token_pieces

    completion_only = TrainConfig.completion_only  # not a studio control: the %%qlora_train default
    rows = []
    for ex in preview.examples(tokenizer, cutoff, completion_only, PREVIEW_ROWS):
        rows.append({"pieces": token_pieces(tokenizer, ex["ids"]), "learned": ex["learned"],
                     "prompt_tokens": ex["prompt_tokens"], "completion_tokens": ex["completion_tokens"],
                     "truncated": ex["truncated"]})
    n_rows, n_val = len(preview.rows), len(preview.val_rows or [])
    if preview.val_rows is None:  # the split training will make with these options (issue 25, class 10)
        train, val = split_rows(preview.rows, opts.get("val_split", TrainConfig.val_split),
                                opts.get("seed", TrainConfig.seed))
        n_rows, n_val = len(train), len(val)
    return {"source": preview.source, "n_rows": n_rows, "n_val": n_val,
            "template": str(preview.template), "chat": preview.chat, "rows": rows, "cutoff_len": cutoff,
            "truncated": preview.truncated(cutoff), "longest": max(preview.lengths, default=0)}


def file_signature(text: str) -> tuple[int, int] | None:
    """(size, mtime) of the file ``text`` names, so a rewritten or deleted file is read again; None otherwise."""
    try:
        st = os.stat(os.path.expanduser(text))
    except (OSError, ValueError):
        return None
    return st.st_size, st.st_mtime_ns
