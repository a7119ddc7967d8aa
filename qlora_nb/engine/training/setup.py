"""A run's set-up before its first step: the data read, validated, split and tokenized, and every check.

Split from :mod:`.train` so that ``Session.launch`` can run the very checks ``train()`` runs
(:func:`check_run`), in the kernel, before any process starts, without building a Trainer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ...config import TrainConfig
from ...data.split import split_rows
from ...errors import QloraError


@dataclass
class Prepared:
    train: list[dict[str, list[int]]]
    val: list[dict[str, list[int]]]
    train_rows: list[dict[str, str]]
    val_rows: list[dict[str, str]]
    template: Any
    chat: bool
    truncated: int


def prepare(session, cfg: TrainConfig) -> Prepared:
    """Load, validate, split and tokenize: every data error surfaces here, before the first step."""
    from ...data.collate import tokenize_rows
    from ...data.load import load_data
    from ...data.validate import validate

    text = validate(load_data(cfg.data), cfg.template, session.tokenizer)
    if text.val_rows is not None:
        train_rows, val_rows = text.rows, text.val_rows
    else:
        train_rows, val_rows = split_rows(text.rows, cfg.val_split, cfg.seed)
    tr = tokenize_rows(train_rows, text.template, session.tokenizer, cfg.cutoff_len, cfg.completion_only, text.chat_format)
    va = tokenize_rows(val_rows, text.template, session.tokenizer, cfg.cutoff_len, cfg.completion_only, text.chat_format)
    if not any(t != -100 for ex in tr.examples for t in ex["labels"]):
        raise QloraError("no row has a completion token left to learn.", where="train option 'data'",
                         hint="Check that the output field is not empty, or raise cutoff_len.")
    return Prepared(tr.examples, va.examples, train_rows, val_rows, text.template, text.chat_format,
                    tr.truncated + va.truncated)


def _planned_steps(cfg: TrainConfig, n_train: int) -> int:
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_epoch = math.ceil(math.ceil(n_train / cfg.batch_size) / cfg.gradient_accumulation_steps)
    return max(1, math.ceil(per_epoch * cfg.epochs))


def checked_options(options: dict[str, Any]) -> TrainConfig:
    """The options as a TrainConfig, probes and a metric callable checked: nothing read or written yet."""
    from . import preflight

    cfg = TrainConfig.from_options(options)
    preflight.check_probes(cfg)
    preflight.check_metric(cfg)
    return cfg


def checked_data(session, cfg: TrainConfig, warmup_given: bool) -> tuple[Prepared, int, TrainConfig]:
    """The data loaded, validated and tokenized, then what depends on it (held-out rows, the schedule).

    ``(prepared, planned steps, the config the run uses)``. :func:`check_run` runs the same checks for a
    launch, in the kernel, before any process starts.
    """
    from ..interrupts import interrupted_as_error
    from . import preflight

    with interrupted_as_error("reading and checking the training data", "train option 'data'",
                              "Nothing was trained and the session is unchanged; run it again."):
        prep = prepare(session, cfg)
    if cfg.early_stopping_patience and not prep.val:
        raise QloraError("early_stopping_patience needs held-out rows to evaluate.",
                         where="train option 'early_stopping_patience'", hint="Set val_split > 0.")
    if cfg.eval_metric is not None and not prep.val_rows:
        raise QloraError("eval_metric scores generations on held-out rows, and this run holds out none.",
                         where="train option 'eval_metric'", hint="Set val_split > 0 (or give val rows), or drop "
                                                                   "eval_metric.")
    planned = _planned_steps(cfg, len(prep.train))
    return prep, planned, preflight.check_schedule(cfg, planned, warmup_given=warmup_given)


def check_run(session, options: dict[str, Any]) -> TrainConfig:
    """Every check ``train`` makes before its first step, without training or writing anything (launch uses it)."""
    cfg = checked_options(dict(options))
    return checked_data(session, cfg, warmup_given="warmup_steps" in options)[2]
