"""Tokenize text rows into (input_ids, labels) and batch them without wasting compute on padding.

Prompt and completion are tokenized separately, so the prompt's tokens are
exactly those generation later sees for the same prompt; the completion ends
with EOS so the model learns to stop. With ``completion_only`` the prompt's
labels are -100 and only the completion is learned.

Batches are padded to their own longest row (not to ``cutoff_len``) and, with
length grouping, rows of similar length share a batch. ``packing`` goes further
and flattens a batch into one row whose ``position_ids`` restart at every
example: transformers then builds a block-diagonal causal mask, so examples do
not attend to each other and there is no padding at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .template import Template

IGNORE = -100


@dataclass
class Tokenized:
    examples: list[dict[str, list[int]]]
    truncated: int


def tokenize_rows(rows: Sequence[dict[str, str]], template: Template, tokenizer: Any, cutoff_len: int,
                  completion_only: bool = True, chat: bool = False) -> Tokenized:
    """Token ids and labels per row; rows over ``cutoff_len`` are truncated and counted.

    Truncation keeps at least half of ``cutoff_len`` for the completion: the
    prompt loses tokens from its start (the end of a prompt is what the answer
    depends on most), the completion from its end.
    """
    eos = tokenizer.eos_token_id
    out, truncated = [], 0
    for row in rows:
        p = tokenizer(template.prompt(row), add_special_tokens=not chat)["input_ids"]
        c = tokenizer(template.completion(row), add_special_tokens=False)["input_ids"]
        if not chat and eos is not None and (not c or c[-1] != eos):
            c = c + [eos]
        if len(p) + len(c) > cutoff_len:
            truncated += 1
            keep_c = min(len(c), max(cutoff_len - len(p), cutoff_len // 2))
            keep_p = cutoff_len - keep_c
            p = p[len(p) - keep_p:] if keep_p else []
            c = c[:keep_c]
        labels = ([IGNORE] * len(p) if completion_only else list(p)) + list(c)
        out.append({"input_ids": list(p) + list(c), "labels": labels})
    return Tokenized(out, truncated)


class ListDataset:
    """A map-style dataset over a list (what ``Trainer`` and its length-grouped sampler need)."""

    def __init__(self, items: list[dict[str, list[int]]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.items[i]


def make_collator(tokenizer: Any, packing: bool = False):
    """transformers' collators: pad each batch to its longest row, or flatten it when ``packing``.

    ``DataCollatorForSeq2Seq`` pads ``input_ids`` with the pad token on the
    tokenizer's side (right, set by the loader) and ``labels`` with -100.
    ``DataCollatorWithFlattening`` concatenates the batch into one row with
    ``position_ids`` restarting per example and -100 as each example's first
    label (it would be predicted from the previous example). Both give the same
    tensors as the hand-written collator they replaced (checked on the demo
    tokenizer).
    """
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    if packing:
        return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE)
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE, return_tensors="pt")


def real_tokens(batch: dict[str, Any]) -> int:
    """Non-padding tokens in a collated batch (what tokens/s counts)."""
    mask = batch.get("attention_mask")
    if mask is not None:
        return int(mask.sum())
    return int(batch["input_ids"].numel())
