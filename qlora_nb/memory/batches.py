"""What a step really computes on known data: each batch padded to its longest row, in the order training draws them.

Training pads every batch to its own longest row (``DataCollatorForSeq2Seq``,
:mod:`qlora_nb.data.collate`), so a step's matmuls run on ``batch × longest``
tokens, not on the rows' mean length, and attention on ``longest²`` per row.
Which rows share a batch depends on the sampler the Trainer uses:

* ``group_by_length`` (the toolkit's default): transformers'
  ``get_length_grouped_indices`` permutes the rows, cuts the permutation into
  mega-batches of ``min(n // (4·g), 50)·g`` rows (``g`` = batch × accumulation),
  sorts each mega-batch longest first and swaps the longest row of all to the
  very front; the data loader then takes ``batch`` consecutive rows at a time;
* ``random``: a plain permutation;
* ``packing``: rows are concatenated with no padding at all.

The permutation comes from torch's generator, which a config-level forecast
neither has nor should import, so this takes the *expectation*: the same
procedure over ``SAMPLES`` seeded permutations (Python's ``random``), over the
micro-batches the run will actually take (a short run takes the first, longest
ones of the first mega-batch; a long one cycles through whole epochs).

Pure Python over lists of ints; no torch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

MEGA_BATCH_MAX = 50  # transformers.trainer_pt_utils.get_length_grouped_indices
SAMPLES = 16  # permutations averaged; the spread between seeds is a few % on the demo data
ROWS_SAMPLED = 200_000  # fewer permutations for large data (its batches average out anyway)
GROUPINGS = ("group_by_length", "random", "packing")


@dataclass(frozen=True)
class Padded:
    """Means per row over the micro-batches a run takes: computed tokens (padded), their squares, real, labelled."""

    tokens: float
    sq_tokens: float
    real: float
    labelled: float


def sampler_order(lengths: list[int], group: int, grouping: str, rng: random.Random) -> list[int]:
    """One epoch's row order, as the Trainer's sampler builds it (see the module docstring)."""
    n = len(lengths)
    order = list(range(n))
    rng.shuffle(order)
    if grouping != "group_by_length":
        return order
    mult = min(n // (group * 4), MEGA_BATCH_MAX) or 1
    size = mult * group
    megas = [sorted(order[i:i + size], key=lambda j: lengths[j], reverse=True) for i in range(0, n, size)]
    top = max(range(len(megas)), key=lambda m: lengths[megas[m][0]])
    megas[0][0], megas[top][0] = megas[top][0], megas[0][0]
    return [j for m in megas for j in m]


def padded_means(lengths: list[int], labelled: list[int], batch_size: int, grad_accum: int = 1,
                 grouping: str = "group_by_length", steps: int | None = None, samples: int = SAMPLES,
                 seed: int = 0) -> Padded:
    """Expected per-row work of a run's micro-batches; ``steps`` optimizer steps (None: one epoch)."""
    return _padded(tuple(lengths), tuple(labelled), batch_size, grad_accum, grouping, steps, samples, seed)


@lru_cache(maxsize=64)  # the fastest-setup search prices the same rows at each batch size several times
def _padded(lengths: tuple[int, ...], labelled: tuple[int, ...], batch_size: int, grad_accum: int, grouping: str,
            steps: int | None, samples: int, seed: int) -> Padded:
    n = len(lengths)
    if n == 0:
        return Padded(0.0, 0.0, 0.0, 0.0)
    labelled = labelled if len(labelled) == n else list(lengths)
    real = sum(lengths) / n
    lab = sum(labelled) / n
    if grouping == "packing":
        return Padded(real, sum(x * x for x in lengths) / n, real, lab)
    batch = max(1, batch_size)
    per_epoch = -(-n // batch)
    micro = None if steps is None else max(1, steps) * max(1, grad_accum)
    if micro is not None and micro >= per_epoch:  # whole epochs: every epoch has the same expectation
        micro = None
    tok = sq = real_sum = lab_sum = 0.0
    rows = 0
    for s in range(max(1, min(samples, ROWS_SAMPLED // n)) if grouping in GROUPINGS else 1):
        order = sampler_order(lengths, batch * max(1, grad_accum), grouping, random.Random(seed + s))
        for k, i in enumerate(range(0, n, batch)):
            if micro is not None and k >= micro:
                break
            chunk = order[i:i + batch]
            top = max(lengths[j] for j in chunk)
            tok += top * len(chunk)
            sq += top * top * len(chunk)
            real_sum += sum(lengths[j] for j in chunk)
            lab_sum += sum(labelled[j] for j in chunk)
            rows += len(chunk)
    return Padded(tok / rows, sq / rows, real_sum / rows, lab_sum / rows)
