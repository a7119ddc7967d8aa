"""A user's metric callable: a wrong signature is refused before anything runs, and an exception it raises is one
paragraph naming the metric, the row and the exception; in training the run stops at a checkpoint and the session's
adapters are as they were."""

from __future__ import annotations

import functools

import pytest
from test_task_metric import FAST, ROWS

from qlora_nb.data import scoring
from qlora_nb.engine.rollback import fingerprint
from qlora_nb.errors import QloraError


def _raises_on(row_text: str, exc: Exception):
    def picky(prediction, reference):
        if reference == row_text:
            raise exc
        return 1.0

    return picky


@pytest.mark.parametrize("exc", [ValueError("bad literal"), KeyError("answer"), ZeroDivisionError("division by zero"),
                                 TypeError("unsupported operand"), AttributeError("'str' has no attribute 'x'")])
def test_an_exception_names_the_metric_the_row_and_the_exception(exc):
    refs = ["a", "b", "c", "d"]
    with pytest.raises(QloraError) as info:
        scoring.score_all(_raises_on("c", exc), ["p"] * 4, refs)
    text = str(info.value)
    assert text.startswith("train option 'eval_metric': the metric 'picky' raised " + type(exc).__name__)
    assert "on row 2" in text and "reference 'c'" in text
    assert "f(prediction: str, reference: str)" in text
    assert isinstance(info.value, scoring.MetricError) and not isinstance(info.value, type(exc))


def _one(p):
    return 1.0


def _three(p, r, extra):
    return 1.0


def _keywords_only(*, prediction, reference):
    return 1.0


def _none():
    return 1.0


@pytest.mark.parametrize("fn", [_one, _three, _keywords_only, _none, lambda: 1])
def test_a_wrong_signature_is_refused_before_any_call(fn):
    with pytest.raises(QloraError, match=r"eval_metric'.*has the signature .*cannot be called with a prediction and "
                                         r"a reference.*Write it as f\(prediction: str, reference: str\)"):
        scoring.resolve(fn)


class _Callable:
    def __call__(self, prediction, reference):
        return prediction == reference


@pytest.mark.parametrize("fn", [lambda p, r: p == r, lambda p, r, strict=True: 1.0, lambda *a: 0.5,
                                lambda p, r, **kw: 0.0, functools.partial(_three, extra=1), _Callable()])
def test_callables_that_take_two_arguments_are_accepted(fn):
    assert scoring.score_all(fn, ["x", "y"], ["x", "z"]) in ([1.0, 0.0], [1.0, 1.0], [0.5, 0.5], [0.0, 0.0])


def test_bad_return_values_name_the_row_too():
    with pytest.raises(QloraError, match=r"the metric '<lambda>' returned 2 on row 1 for the prediction 'q'"):
        scoring.score_all(lambda p, r: 1 if p == "p" else 2, ["p", "q"], ["a", "b"])


# ------------------------------------------------------------------ in training
def test_a_wrong_signature_stops_training_before_its_folder_exists(tiny_session, tmp_path):
    before = fingerprint(tiny_session)
    with pytest.raises(QloraError, match=r"the metric '_one' has the signature"):
        tiny_session.train(data=ROWS, max_steps=2, val_split=5, eval_metric=_one, output_dir=str(tmp_path / "r"),
                           **FAST)
    assert not (tmp_path / "r").exists() and fingerprint(tiny_session) == before


def test_a_metric_failing_at_an_eval_stops_the_run_at_its_checkpoint(tiny_session, tmp_path):
    calls = []

    def flaky(prediction, reference):
        calls.append(reference)
        if len(calls) > 3:  # the base (3 rows) scores fine; the first eval's first row fails
            raise KeyError("score")
        return 0.0

    before = fingerprint(tiny_session)
    with pytest.raises(QloraError) as info:
        tiny_session.train(data=ROWS, max_steps=4, eval_steps=2, val_split=5, eval_metric=flaky, eval_metric_rows=3,
                           output_dir=str(tmp_path / "r"), **FAST)
    text = str(info.value)
    assert "the metric 'flaky' raised KeyError: 'score' on row 0" in text
    assert "stopped after step 2" in text and "checkpoint-2" in text and "resume: true" in text
    assert (tmp_path / "r" / "checkpoint-2" / "adapter_model.safetensors").is_file()
    assert fingerprint(tiny_session) == before
    assert not tiny_session.runs or tiny_session.runs[-1].output_dir != tmp_path / "r"


def test_a_metric_failing_on_the_base_says_nothing_was_trained(tiny_session, tmp_path):
    before = fingerprint(tiny_session)
    with pytest.raises(QloraError, match=r"'broken' raised ZeroDivisionError.*on row 0.*before its first step"):
        def broken(prediction, reference):
            return 1 / 0

        tiny_session.train(data=ROWS, max_steps=2, eval_steps=2, val_split=5, eval_metric=broken, eval_metric_rows=2,
                           output_dir=str(tmp_path / "r"), **FAST)
    assert fingerprint(tiny_session) == before
