"""A task metric from greedy generations on held-out rows: the training metric, the demo and probes share it.

``score_rows`` generates (greedy, batched, see :mod:`.probes`) the completion of
each row's prompt and scores it against the row's reference with
:mod:`qlora_nb.data.scoring`. During training :func:`training_metric` is called
from the Trainer's ``log`` at each eval (see :mod:`.train`), so the scores land
in ``trainer_state.json``'s ``log_history`` beside ``eval_loss`` and reach every
``report_to`` logger. Its time is measured and reported on its own; it lies
outside the training steps, so tokens/s never includes it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ...data.scoring import MetricError, fmt_hits, metric_name, resolve, score_pairs
from ...errors import QloraError

CHUNK = 16  # rows generated together: bounds the KV cache of one generate() call


@dataclass
class TaskScore:
    """Scores of one model (the base or an adapter) on ``total`` held-out rows."""

    metric: str
    scores: list[float]
    prompts: list[str] = field(repr=False)
    outputs: list[str] = field(repr=False)
    references: list[str] = field(repr=False)
    seconds: float = 0.0

    @property
    def hits(self) -> float:
        return sum(self.scores)

    @property
    def total(self) -> int:
        return len(self.scores)

    @property
    def score(self) -> float:
        return self.hits / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"{fmt_hits(self.hits, self.total)} ({100 * self.score:.0f}%)"


def reference_tokens(tokenizer, references: list[str]) -> int:
    """Tokens in the longest reference: how long a greedy answer needs to be to match it."""
    return max((len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references), default=0)


def score_rows(session, template, rows: list[dict[str, Any]], metric: Any = "exact_match", base: bool = False,
               max_new_tokens: int | None = None) -> TaskScore:
    """Greedy completions of ``rows`` (their template prompts) scored against their references."""
    from .probes import generate_batch

    fn = resolve(metric)  # a user callable's signature is checked here, before anything is generated
    prompts = [template.prompt(r) for r in rows]
    refs = [template.completion(r) for r in rows]
    if max_new_tokens is None:  # room for the longest reference and its end-of-sequence token
        max_new_tokens = min(512, reference_tokens(session.tokenizer, refs) + 8)
    started = time.perf_counter()
    outputs: list[str] = []
    for i in range(0, len(prompts), CHUNK):
        outputs += generate_batch(session, prompts[i:i + CHUNK], max_new_tokens, base=base)
    scores = score_pairs(fn, outputs, refs)
    return TaskScore(metric_name(metric), scores, prompts, outputs, refs, time.perf_counter() - started)


def summary(metric: str, base: TaskScore | None, last: TaskScore | None) -> str:
    """``exact match 0/16 → 13/16``: the base's score before training, the adapter's at the last eval."""
    name = metric.replace("_", " ")
    if last is None:
        return f"{name} {fmt_hits(base.hits, base.total)} (base)" if base is not None else ""
    if base is None:
        return f"{name} {fmt_hits(last.hits, last.total)}"
    return f"{name} {fmt_hits(base.hits, base.total)} → {fmt_hits(last.hits, last.total)}"


class TrainingMetric:
    """The metric of one run: the base scored once before training, the adapter at each eval.

    :meth:`on_eval` adds ``eval_metric`` (fraction), ``eval_metric_hits``,
    ``eval_metric_rows`` and ``eval_metric_s`` (its own time) to the eval's log
    entry; :meth:`final_metrics` gives the run's totals for ``TrainResult.metrics``.
    """

    def __init__(self, session, template, rows: list[dict[str, Any]], metric: Any) -> None:
        self.session, self.template, self.rows = session, template, rows
        resolve(metric)  # a callable with the wrong signature is refused here, before training starts
        self.metric, self.name = metric, metric_name(metric)
        self.max_new_tokens = min(512, reference_tokens(session.tokenizer, [template.completion(r) for r in rows]) + 8)
        self.base: TaskScore | None = None
        self.last: TaskScore | None = None
        self.seconds = 0.0
        self.evals = 0

    def _score(self, base: bool) -> TaskScore:
        result = score_rows(self.session, self.template, self.rows, self.metric, base=base,
                            max_new_tokens=self.max_new_tokens)
        self.seconds += result.seconds
        return result

    def score_base(self) -> TaskScore:
        if self.base is None:
            self.base = self._score(base=True)
        return self.base

    def on_eval(self, logs: dict[str, Any]) -> None:
        self.last = self._score(base=False)
        self.evals += 1
        logs.update({"eval_metric": self.last.score, "eval_metric_hits": self.last.hits,
                     "eval_metric_rows": self.last.total, "eval_metric_s": self.last.seconds})

    def final_metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"eval_metric_name": self.name, "eval_metric_rows": len(self.rows),
                               "eval_metric_s": self.seconds, "eval_metric_evals": self.evals,
                               "eval_metric_summary": summary(self.name, self.base, self.last)}
        if self.base is not None:
            out.update(base_eval_metric=self.base.score, base_eval_metric_hits=self.base.hits)
        if self.last is not None:
            out.update(eval_metric=self.last.score, eval_metric_hits=self.last.hits)
        return out


def stopped_by_metric(trainer, out, exc: MetricError) -> QloraError:
    """The run stops where the user's metric failed: the last finished step is checkpointed, and the one error says
    which metric, which row, what it raised, and how to continue (``MetricError`` is re-exported for train.py)."""
    from ..interrupts import ignoring_interrupts
    from ..lifecycle import last_complete_checkpoint

    step = int(getattr(trainer.state, "global_step", 0) or 0)
    if step == 0:
        kept = "The run stopped before its first step (scoring the base), so nothing was trained."
    else:
        existing = last_complete_checkpoint(out)
        try:
            if not (existing and str(existing).endswith(f"checkpoint-{step}")):
                with ignoring_interrupts():
                    trainer._save_checkpoint(trainer.model, trial=None)
            kept = (f"The run stopped after step {step}; {last_complete_checkpoint(out)} holds it: fix the metric and "
                    "train again with resume: true to continue from there.")
        except Exception as save_exc:  # noqa: BLE001 - a full disk: say so rather than claim a checkpoint
            kept = (f"The run stopped after step {step}, and writing its checkpoint failed ({type(save_exc).__name__}:"
                    f" {save_exc}).")
    return QloraError(exc.message, where=exc.where,
                      hint=f"{exc.hint} {kept}".strip())
