"""The order a run trains its rows in, as a function of its seed and the epoch alone.

transformers' ``LengthGroupedSampler`` (``group_by_length``, the default here) draws each epoch's
permutation from torch's *global* generator, which the Trainer seeds once, when it is built. Whatever drew
from that generator before an epoch began (a machine measurement taken the first time in a process, a
generation, a thread left over from earlier work) changed which rows formed each batch, so a run with a
fixed seed trained differently depending on what the process had done before it: the early-stopping test
of issue 34 trained all 30 steps in one full suite run, and stops early alone. Here each epoch draws from
a private generator seeded with ``seed + epoch`` (the Trainer calls ``set_epoch`` before every epoch,
a resumed one included), so a resumed run redraws its epoch's order exactly, in any epoch.
"""

from __future__ import annotations

from typing import Any


def seeded_length_grouped(sampler: Any, seed: int) -> Any:
    """``sampler`` (a ``LengthGroupedSampler``) redrawn from ``seed`` each epoch; any other sampler unchanged."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    if type(sampler) is not LengthGroupedSampler or sampler.generator is not None:
        return sampler

    class SeededLengthGroupedSampler(LengthGroupedSampler):
        epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __iter__(self):
            self.generator = torch.Generator().manual_seed(seed + self.epoch)
            return super().__iter__()

    return SeededLengthGroupedSampler(sampler.batch_size, lengths=sampler.lengths)
