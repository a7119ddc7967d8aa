"""Task scores: how well a generated completion matches a row's reference.

One place for the scoring the training metric (``eval_metric``), the probes,
``%qlora_compare --data val`` and the CLI demo all use, so "13/16" means the
same thing wherever it is shown. Pure functions: no model, no session.

- ``exact_match``: equal after stripping surrounding whitespace;
- ``contains``: the stripped reference occurs in the prediction;
- ``json_match``: both parse as JSON and the values are equal (key order and
  spacing do not matter); a prediction that does not parse scores 0;
- a callable ``f(prediction, reference)`` returning a bool or a number in [0, 1].
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from ..config import EVAL_METRICS as METRICS
from ..errors import QloraError, did_you_mean

Scorer = Callable[[str, str], float]


def exact_match(prediction: str, reference: str) -> float:
    return float(str(prediction).strip() == str(reference).strip())


def contains(prediction: str, reference: str) -> float:
    ref = str(reference).strip()
    return float(bool(ref) and ref in str(prediction))


def json_match(prediction: str, reference: str) -> float:
    try:
        return float(json.loads(str(prediction).strip()) == json.loads(str(reference).strip()))
    except ValueError:  # the model wrote something that is not JSON (or the reference is not): no match
        return 0.0


_BUILTIN: dict[str, Scorer] = {"exact_match": exact_match, "contains": contains, "json_match": json_match}


def metric_name(metric: Any) -> str:
    """The name shown for a metric: its own for the built-ins, the function's name for a callable."""
    if isinstance(metric, str):
        return metric
    return getattr(metric, "__name__", None) or type(metric).__name__


def resolve(metric: Any, where: str = "train option 'eval_metric'") -> Scorer:
    """The scoring function for a metric name or callable, or one paragraph saying what is accepted."""
    if callable(metric) and not isinstance(metric, str):
        return _checked(metric, where)
    if isinstance(metric, str) and metric.strip().lower() in _BUILTIN:
        return _BUILTIN[metric.strip().lower()]
    raise QloraError(f"{metric!r} is not a task metric.", where=where,
                     hint=did_you_mean(str(metric), METRICS) + " Or pass a Python function "
                          "f(prediction, reference) that returns a bool or a number from 0 to 1.")


def _checked(fn: Callable[[str, str], Any], where: str) -> Scorer:
    """A user's callable whose result is checked: a bad return value names the metric, not a Trainer frame."""
    name = metric_name(fn)

    def score(prediction: str, reference: str) -> float:
        value = fn(prediction, reference)
        if isinstance(value, bool):
            return float(value)
        if isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1:
            return float(value)
        raise QloraError(f"the metric {name!r} returned {value!r} for the prediction {str(prediction)[:60]!r}; "
                         "a metric returns True/False or a number from 0 to 1.", where=where,
                         hint="Return e.g. float(prediction.strip() == reference.strip()).")

    score.__name__ = name
    return score


def score_all(metric: Any, predictions: list[str], references: list[str]) -> list[float]:
    """One score per (prediction, reference) pair."""
    fn = resolve(metric)
    return [fn(p, r) for p, r in zip(predictions, references, strict=True)]


def fmt_hits(hits: float, total: int) -> str:
    """``13/16``; ``12.5/16`` when a callable gave partial credit."""
    return f"{hits:.0f}/{total}" if float(hits).is_integer() else f"{hits:.1f}/{total}"
