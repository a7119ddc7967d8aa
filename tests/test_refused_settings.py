"""Issue 15, class 5: settings that cannot do what was asked are refused or warned about before any work."""

from __future__ import annotations

import json
import warnings

import pytest

import qlora_nb
from qlora_nb.errors import QloraError, QloraWarning

ROWS = [{"prompt": f"Q{i}: ", "completion": f"answer {i}"} for i in range(8)]

TARGETS = [
    ("q_proj,v_prj", ["'v_prj'", "'v_proj'"]),
    ("q_prj", ["'q_prj'", "'q_proj'"]),
    ("q_proj,k_proj,o_prj,down_proj", ["'o_prj'", "'o_proj'"]),
    ("attention", ["'attention'", "q_proj"]),
    ("gate,up", ["'gate'", "'up'"]),
]


@pytest.mark.parametrize("targets,expect", TARGETS, ids=[t for t, _ in TARGETS])
def test_every_named_target_must_match(tiny_model_dir, targets, expect):
    with pytest.raises(QloraError) as info:
        qlora_nb.load(str(tiny_model_dir), targets=targets, r=4)
    text = str(info.value)
    assert text.startswith("load option 'targets'")
    for e in expect:
        assert e in text, (e, text)


@pytest.mark.parametrize("targets", ["q_proj,v_proj", "self_attn.q_proj", "all-linear", "down_proj"])
def test_matching_targets_load(tiny_model_dir, targets):
    s = qlora_nb.load(str(tiny_model_dir), targets=targets, r=4)
    assert s.params["trainable"] > 0


@pytest.mark.parametrize("r,warns", [(4, False), (32, False), (33, True), (64, True)])
def test_rank_above_the_smallest_adapted_dimension_warns(tiny_model_dir, r, warns):
    # the tiny model: hidden 64, 2 KV heads of 16 -> k_proj/v_proj have 32 outputs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qlora_nb.load(str(tiny_model_dir), r=r)
    ours = [w for w in caught if issubclass(w.category, QloraWarning)]
    assert bool(ours) == warns, [str(w.message) for w in ours]
    if warns:
        assert f"r={r}" in str(ours[0].message) and "32" in str(ours[0].message)


@pytest.fixture
def session(tiny_model_dir):
    return qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0)


def _b_norm(s) -> float:
    return sum(float(p.detach().abs().sum()) for n, p in s.model.named_parameters() if "lora_B" in n)


SCHEDULES = [
    (dict(max_steps=2, warmup_steps=2), "warmup_steps=2 covers the whole run of 2"),
    (dict(max_steps=2, warmup_steps=10), "warmup_steps=10"),
    (dict(max_steps=1, warmup_steps=1), "of 1 step"),
    (dict(epochs=1, warmup_steps=50, batch_size=4), "of 2 step"),  # 8 rows / 4 = 2 planned steps
]


@pytest.mark.parametrize("opts,expect", SCHEDULES, ids=[str(o) for o, _ in SCHEDULES])
def test_a_run_that_is_all_warm_up_is_refused(session, tmp_path, opts, expect):
    out = tmp_path / "run"
    with pytest.raises(QloraError, match="warmup_steps") as info:
        session.train(data=ROWS, val_split=0, output_dir=str(out), **opts)
    assert expect in str(info.value)
    assert not session.runs and not (out / "adapter").exists()


def test_default_warm_up_fits_a_short_run_so_it_learns(session, tmp_path):
    before = _b_norm(session)
    result = session.train(data=ROWS, max_steps=1, batch_size=4, val_split=0, learning_rate=1e-2,
                           output_dir=str(tmp_path / "run"))
    assert _b_norm(session) > before  # the learning rate of the only step was not zero
    assert result.config["warmup_steps"] == 0


PROBES = [
    ([1, 2], "probe 1 is a str"),
    (["ok", None], "probe 2 is a NoneType"),
    (["ok", {"p": 1}], "probe 2 is a dict"),
    ([["nested"]], "probe 1 is a list"),
    (["ok", ""], "probe 2 is ''"),
    (["ok", "   "], "probe 2 is '   '"),
]


@pytest.mark.parametrize("probes,expect", PROBES, ids=[repr(p) for p, _ in PROBES])
def test_probes_that_are_not_text_are_refused_before_training(session, tmp_path, probes, expect):
    out = tmp_path / "run"
    with pytest.raises(QloraError) as info:
        session.train(data=ROWS, probes=probes, max_steps=2, val_split=0, output_dir=str(out))
    text = str(info.value)
    assert text.startswith("train option 'probes'")
    assert expect.split(" is ")[0] in text and "not a prompt text" in text
    assert not out.exists() and not session.runs


def test_yaml_probes_stay_text(session):
    from qlora_nb.config import TrainConfig
    from qlora_nb.magics.base import parse_yaml_body

    cfg = TrainConfig.from_options(parse_yaml_body("data: x\nprobes: [1, 2.5, yes]", "qlora_train"))
    assert cfg.probes == ["1", "2.5", "yes"]  # written as YAML scalars, read as the text typed


def _train(session, out, rows, **kw):
    opts = dict(batch_size=2, val_split=0, output_dir=str(out), save_steps=2, warmup_steps=0, cutoff_len=32)
    opts.update(kw)
    return session.train(data=rows, **opts)


def test_resume_says_when_the_data_changed_or_nothing_is_left(session, tmp_path):
    out = tmp_path / "run"
    _train(session, out, ROWS, max_steps=4)
    marker = json.loads((out / "written_by_qlora_nb.json").read_text())
    assert marker["kind"] == "run" and len(marker["data_sha256"]) == 64
    with pytest.raises(QloraError, match="already at step 4.*train nothing"):
        _train(session, out, ROWS, max_steps=4, resume=True)
    with pytest.raises(QloraError, match="already at step 4"):
        _train(session, out, ROWS, max_steps=3, resume=True)
    changed = ROWS[:-1] + [{"prompt": "Q7: ", "completion": "a different answer"}]
    with pytest.warns(QloraWarning, match="training data changed"):
        resumed = _train(session, out, changed, max_steps=6, resume=True)
    assert resumed.metrics["steps"] == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error", QloraWarning)  # same rows again: no warning
        _train(session, out, changed, max_steps=8, resume=True)


def test_resume_with_fewer_steps_than_planned_warns(session, tmp_path):
    out = tmp_path / "run"
    first = _train(session, out, ROWS, max_steps=4, save_steps=2)
    assert first.metrics["steps"] == 4
    import shutil

    shutil.rmtree(out / "checkpoint-4")  # as if interrupted after checkpoint-2 of a 4-step run
    with pytest.warns(QloraWarning, match="resuming with 3 steps where the checkpoint's run planned 4"):
        _train(session, out, ROWS, max_steps=3, resume=True)
