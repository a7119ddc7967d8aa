"""The task metric: the scoring functions, and ``eval_metric`` scoring generations at each eval (tiny model)."""

from __future__ import annotations

import json

import pytest

from qlora_nb.config import TrainConfig
from qlora_nb.data import scoring
from qlora_nb.errors import QloraError

ROWS = [{"q": f"{i} plus {i % 5}", "output": f"{i + i % 5}"} for i in range(24)]
FAST = dict(template="Q: {q}\nA: {output}", batch_size=4, cutoff_len=64, warmup_steps=0, n_probes=0)


def test_builtin_scores():
    assert scoring.exact_match(" 42\n", "42") == 1.0 and scoring.exact_match("42.", "42") == 0.0
    assert scoring.contains("the answer is 42.", " 42 ") == 1.0 and scoring.contains("4", "42") == 0.0
    assert scoring.contains("anything", "") == 0.0  # an empty reference matches nothing, not everything
    assert scoring.json_match('{"a": 1, "b": [2]}', '{"b":[2],"a":1}') == 1.0
    assert scoring.json_match('{"a": 1', '{"a": 1}') == 0.0  # unparsable prediction: no match, no error
    assert scoring.score_all("exact_match", ["a", "b"], ["a", "c"]) == [1.0, 0.0]
    assert scoring.fmt_hits(13.0, 16) == "13/16" and scoring.fmt_hits(12.5, 16) == "12.5/16"


def test_callable_metric_is_checked():
    def half(prediction, reference):
        return 0.5

    def bad(prediction, reference):
        return "yes"

    assert scoring.score_all(half, ["x"], ["y"]) == [0.5]
    assert scoring.metric_name(half) == "half"
    with pytest.raises(QloraError, match=r"eval_metric'.*'bad' returned 'yes'.*0 to 1"):
        scoring.score_all(bad, ["x"], ["y"])


def test_eval_metric_option():
    assert TrainConfig(data="demo", eval_metric="Exact_Match").eval_metric == "exact_match"
    assert TrainConfig(data="demo", eval_metric="none").eval_metric is None
    assert TrainConfig(data="demo").eval_metric_rows == 16
    with pytest.raises(QloraError, match=r"train option 'eval_metric': 'exact' is not a task metric.*exact_match"):
        TrainConfig(data="demo", eval_metric="exact")
    with pytest.raises(QloraError, match=r"eval_metric.*not a task metric"):
        TrainConfig(data="demo", eval_metric=3)
    with pytest.raises(QloraError, match=r"eval_metric_rows"):
        TrainConfig(data="demo", eval_metric_rows=0)


def test_eval_metric_with_a_callable(tiny_session, tmp_path):
    """The base is scored once before training, the adapter at each eval, on the first eval_metric_rows rows."""
    calls = []

    def first_char(prediction, reference):
        calls.append((prediction, reference))
        return prediction.strip()[:1] == reference.strip()[:1]

    events = []
    result = tiny_session.train(data=ROWS, max_steps=4, eval_steps=2, val_split=5, eval_metric=first_char,
                                eval_metric_rows=3, output_dir=str(tmp_path / "run"), on_event=events.append,
                                **FAST)
    refs = [tiny_session.template.completion(r) for r in tiny_session.val_rows[:3]]
    assert [c[1] for c in calls] == refs * 3  # base once + 2 evals, each on the same 3 held-out references
    evals = [e for e in events if e["kind"] == "eval"]
    assert [(e["step"], e.get("base", False)) for e in evals] == [(0, True), (2, False), (4, False)]
    expected = [sum(p.strip()[:1] == r.strip()[:1] for p, r in calls[i * 3:(i + 1) * 3]) for i in range(3)]
    assert [e["eval_metric_hits"] for e in evals] == expected
    assert all(e["eval_metric_rows"] == 3 and e["eval_metric_s"] > 0 for e in evals)
    assert [h["step"] for h in result.history if "eval_metric" in h] == [2, 4]
    assert result.eval_metrics == [expected[1] / 3, expected[2] / 3]
    m = result.metrics
    assert m["base_eval_metric_hits"] == expected[0] and m["eval_metric_hits"] == expected[2]
    assert m["eval_metric_name"] == "first_char" and m["eval_metric_evals"] == 2
    assert m["eval_metric_summary"] == f"first char {expected[0]}/3 → {expected[2]}/3"
    assert m["eval_metric_s"] == pytest.approx(sum(e["eval_metric_s"] for e in evals))
    assert m["eval_metric_s"] < m["wall_s"] - m["step_time_s"] + 1e-6  # reported apart from the steps' time
    # the Trainer's own log_history holds the scores beside eval_loss, in a state file at the run's top
    state = json.loads((result.output_dir / "trainer_state.json").read_text())
    logged = [h for h in state["log_history"] if "eval_loss" in h]
    assert [h["eval_metric_hits"] for h in logged] == expected[1:]
    saved = json.loads((result.output_dir / "train_config.json").read_text())
    assert saved["metrics"]["eval_metric_summary"] == m["eval_metric_summary"]
    assert saved["train"]["eval_metric"] == "first_char"
    assert "first char" in repr(result)


def test_eval_metric_needs_held_out_rows(tiny_session, tmp_path):
    with pytest.raises(QloraError, match=r"eval_metric.*holds out none.*val_split"):
        tiny_session.train(data=ROWS, max_steps=2, val_split=0, eval_metric="exact_match",
                           output_dir=str(tmp_path / "r"), **FAST)


def test_probes_carry_their_reference_and_score(tiny_session, tmp_path):
    events = []
    tiny_session.train(data=ROWS, max_steps=2, eval_steps=2, val_split=4, output_dir=str(tmp_path / "p"),
                       on_event=events.append, **{**FAST, "n_probes": 2})
    probes = [e for e in events if e["kind"] == "probe"]
    assert len(probes) == 2
    for p, row in zip(probes, tiny_session.val_rows, strict=False):
        assert p["reference"] == tiny_session.template.completion(row)
        assert p["score"] == {"base": scoring.exact_match(p["base"], p["reference"]),
                              "adapted": scoring.exact_match(p["adapted"], p["reference"])}
    # compare --data val scores its rows with the same function
    result = tiny_session.compare(tiny_session.val_rows[:2], max_new_tokens=8)
    for record in result:
        assert record["reference"] is not None
        for cell in record["columns"].values():
            assert cell["score"] == scoring.exact_match(cell["text"], record["reference"])
