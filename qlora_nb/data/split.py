"""The held-out split training makes, seeded: in the data layer so the time forecast can batch the same rows."""

from __future__ import annotations

import random

from ..errors import QloraError


def split_rows(rows: list[dict[str, str]], val_split: float, seed: int) -> tuple[list, list]:
    """A seeded held-out split: a fraction when ``val_split < 1``, a row count otherwise."""
    if val_split <= 0:
        return list(rows), []
    n_val = int(val_split) if val_split >= 1 else max(1, round(len(rows) * val_split))
    if n_val >= len(rows):
        raise QloraError(f"val_split={val_split:g} holds out {n_val} of {len(rows)} rows, leaving none to train on.",
                         where="train option 'val_split'",
                         hint="Use a smaller fraction (e.g. 0.1), a smaller count, or 0 for no evaluation.")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_val])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]
