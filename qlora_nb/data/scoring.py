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

import inspect
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


SIGNATURE = "f(prediction: str, reference: str) -> bool | float in [0, 1]"
RETURN_HINT = "Return e.g. float(prediction.strip() == reference.strip())."


class MetricError(QloraError):
    """A user's metric callable failed on a row: the training loop stops at a checkpoint (engine/training)."""


def _check_signature(fn: Callable[..., Any], name: str, where: str) -> None:
    """Refuse, before anything runs, a callable that cannot be called as ``fn(prediction, reference)``."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: found out at its first call
        return
    try:
        sig.bind("prediction", "reference")
    except TypeError as exc:
        raise QloraError(f"the metric {name!r} has the signature {name}{sig}, which cannot be called with a "
                         f"prediction and a reference ({exc}).", where=where,
                         hint=f"Write it as {SIGNATURE}.") from None


def _checked(fn: Callable[[str, str], Any], where: str) -> Scorer:
    """A user's callable, checked: its signature up front, then each call's exception and return value.

    Whatever goes wrong names the metric and the row, never a Trainer frame; ``row`` is passed by
    :func:`score_pairs`.
    """
    name = metric_name(fn)
    _check_signature(fn, name, where)

    def score(prediction: str, reference: str, row: int | None = None) -> float:
        at = f" on row {row}" if row is not None else ""
        try:
            value = fn(prediction, reference)
        except Exception as exc:  # noqa: BLE001 - the user's code: any exception is reported as theirs
            raise MetricError(f"the metric {name!r} raised {type(exc).__name__}: {str(exc)[:200]}{at} (prediction "
                              f"{str(prediction)[:60]!r}, reference {str(reference)[:60]!r}).", where=where,
                              hint=f"Fix the function; it is called as {SIGNATURE}, once per held-out row.") \
                from None
        if isinstance(value, bool):
            return float(value)
        if isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1:
            return float(value)
        raise MetricError(f"the metric {name!r} returned {value!r}{at} for the prediction {str(prediction)[:60]!r}; "
                          "a metric returns True/False or a number from 0 to 1.", where=where, hint=RETURN_HINT)

    score.__name__ = name
    score.names_rows = True  # type: ignore[attr-defined]
    return score


def score_pairs(fn: Scorer, predictions: list[str], references: list[str]) -> list[float]:
    """One score per pair, each call told its row so a failing user metric names it."""
    if not getattr(fn, "names_rows", False):  # a built-in: nothing of the user's to name
        return [fn(p, r) for p, r in zip(predictions, references, strict=True)]
    return [fn(p, r, row=i) for i, (p, r) in enumerate(zip(predictions, references, strict=True))]  # type: ignore


def score_all(metric: Any, predictions: list[str], references: list[str]) -> list[float]:
    """One score per (prediction, reference) pair."""
    return score_pairs(resolve(metric), predictions, references)


def fmt_hits(hits: float, total: int) -> str:
    """``13/16``; ``12.5/16`` when a callable gave partial credit."""
    return f"{hits:.0f}/{total}" if float(hits).is_integer() else f"{hits:.1f}/{total}"
