"""What training will see for a data source and template, before any training: the studio's Data preview.

The rows go through the very functions training uses (:func:`~qlora_nb.data.load.load_data`,
:func:`~qlora_nb.data.validate.validate`, :func:`~qlora_nb.data.collate.tokenize_rows`), so the
preview cannot drift from what ``%%qlora_train`` feeds the model: the same prompt/completion
split, the same special tokens, the same truncation. Validation errors are the same QloraError
paragraphs, naming the row and field.

Token lengths are computed once per (data, template) with no cutoff; how many rows a given
``cutoff_len`` truncates is then a count over those lengths, so moving the cutoff control does
not re-tokenize the data set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .collate import IGNORE, tokenize_rows
from .load import load_data
from .validate import validate

NO_CUTOFF = 1 << 30


@dataclass
class DataPreview:
    """Validated rows, their full token lengths, and the first rows tokenized exactly as for training."""

    source: str
    rows: list[dict[str, str]]
    val_rows: list[dict[str, str]] | None
    template: Any
    chat: bool
    lengths: list[int]  # prompt + completion (+ EOS) tokens of every row, train and held-out, untruncated

    def truncated(self, cutoff_len: int) -> int:
        """Rows longer than ``cutoff_len`` (training truncates and counts exactly these)."""
        return sum(1 for n in self.lengths if n > cutoff_len)

    def examples(self, tokenizer: Any, cutoff_len: int, completion_only: bool = True,
                 n: int = 3) -> list[dict[str, Any]]:
        """The first ``n`` rows as training tokenizes them: ids and, per token, whether it is learned."""
        head = self.rows[:n]
        tok = tokenize_rows(head, self.template, tokenizer, cutoff_len, completion_only, self.chat)
        out = []
        for row, ex, full in zip(head, tok.examples, self.lengths, strict=False):
            learned = [label != IGNORE for label in ex["labels"]]
            out.append({"row": row, "ids": ex["input_ids"], "learned": learned,
                        "prompt_tokens": learned.count(False), "completion_tokens": learned.count(True),
                        "truncated": full > cutoff_len})
        return out


def load_preview(data: Any, template: str | None, tokenizer: Any) -> DataPreview:
    """Load and validate ``data`` (raises the training's QloraError on a bad row) and measure every row."""
    text = validate(load_data(data), template, tokenizer)
    everything = list(text.rows) + list(text.val_rows or [])
    full = tokenize_rows(everything, text.template, tokenizer, NO_CUTOFF, True, text.chat_format)
    lengths = [len(ex["input_ids"]) for ex in full.examples]
    return DataPreview(text.source, text.rows, text.val_rows, text.template, text.chat_format, lengths)
