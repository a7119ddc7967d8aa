"""Issue 25, class 6: every option's boundary values end in a value or a named QloraError, never "a bug".

The catch-all message ("This looks like a bug") is for real bugs only. Each option
of every options class gets its range edges, just past them, machine limits
(2**32 for seeds, 2**63, 1e308, the smallest float), text where numbers go and
odd text where names go. Accepted numbers are then *used*: a one-step run on the
tiny model (stopped after its first step, so 2**40 steps or epochs cannot run
long), a load, a generation, a plan.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest

import qlora_nb
from qlora_nb.config import GenerateConfig, LoadConfig, PlanConfig, TrainConfig
from qlora_nb.errors import QloraError
from qlora_nb.options import field_type

BUG = "looks like a bug"
CLASSES = (LoadConfig, TrainConfig, GenerateConfig, PlanConfig)
_NUMBERS = [0, -1, 1, 2**31, 2**32 - 1, 2**32, 2**63, 2**64, 10**400, 1e308, -1e308, 5e-324, 0.5, "1_000", " 7 "]
_TEXT = ["", " ", "abc", "nan", "inf", "-inf", "1e999", "a\nb", "../x", "x" * 300, "base", "a.b", "$x", "😀", None,
         True, [], {}]


def boundary_values(cls, f: dataclasses.Field) -> list:
    meta, tp = f.metadata, field_type(cls, f.name)
    values = list(_TEXT)
    if tp in (int, float):
        values += _NUMBERS
        for edge in (meta.get("min"), meta.get("max")):
            if edge is not None:
                values += [edge, edge - 1, edge + 1, edge - 1e-9, edge + 1e-9]
    if meta.get("choices"):
        values += [*meta["choices"], *(str(c).upper() for c in meta["choices"]), "bogus"]
    if typing_is_list(tp):
        values += [",", "a,,b", '"a', "'a, b', c", ["a", 1], ["x"] * 3]
    return values


def typing_is_list(tp) -> bool:
    import typing

    return typing.get_origin(tp) in (list, tuple)


CASES = [(cls, f, v) for cls in CLASSES for f in dataclasses.fields(cls) for v in boundary_values(cls, f)]


def _names(cls, f) -> list[str]:
    return [f.name, *f.metadata.get("aliases", ())]


def _build(cls, f, value):
    base = {"data": "demo"} if cls is TrainConfig and f.name != "data" else {}
    return cls.from_options({**base, f.name: value})


@pytest.mark.parametrize("cls,f,value", CASES, ids=[f"{c.__name__}.{f.name}={v!r:.24}" for c, f, v in CASES])
def test_boundary_value_is_kept_or_refused_by_name(cls, f, value):
    try:
        cfg = _build(cls, f, value)
    except QloraError as exc:
        text = str(exc)
        assert BUG not in text
        assert any(n in text for n in _names(cls, f)), f"the error does not name {f.name}: {text}"
        return
    got = getattr(cfg, f.name)
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    if isinstance(got, (int, float)) and not isinstance(got, bool):
        assert math.isfinite(float(got))
        assert lo is None or got >= lo
        assert hi is None or got <= hi
    if f.name.endswith("seed"):
        assert 0 <= got < 2**32  # numpy's seed range: transformers.set_seed seeds numpy too


def _accepted(cls, name, extra=()):
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    out = []
    for v in [*boundary_values(cls, f), *extra]:
        if isinstance(v, (bool, list, dict)) or v is None:
            continue
        try:
            typed = getattr(_build(cls, f, v), name)
        except QloraError:
            continue
        if typed not in out:
            out.append(typed)
    return out


_TRAIN_NUMERIC = [f.name for f in dataclasses.fields(TrainConfig) if field_type(TrainConfig, f.name) in (int, float)]
TRAIN_CASES = [(name, v) for name in _TRAIN_NUMERIC for v in _accepted(TrainConfig, name)]
ROWS = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(8)]


@pytest.fixture(scope="module")
def session(tiny_model_dir):
    return qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0)


@pytest.mark.parametrize("name,value", TRAIN_CASES, ids=[f"{n}={v!r:.24}" for n, v in TRAIN_CASES])
def test_accepted_train_values_train_or_explain(session, tmp_path, monkeypatch, name, value):
    monkeypatch.chdir(tmp_path)
    options = {"max_steps": 1, "val_split": 0.25, name: value}
    if name == "epochs":
        options.pop("max_steps")

    def stop_after_first_step(event):  # 2**40 steps or epochs end after one step, with a checkpoint
        if event.get("kind") == "step":
            session.request_stop()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            session.train(ROWS, on_event=stop_after_first_step, **options)
        except QloraError as exc:
            assert BUG not in str(exc)
        finally:
            session.stop_requested = False


LOAD_CASES = [("seed", 2**32 - 1), ("seed", 0), ("alpha", 1e308), ("alpha", 5e-324), ("dropout", 0.99),
              ("dropout", 0.0), ("r", 1), ("adapter_name", "x" * 64)]


@pytest.mark.parametrize("name,value", LOAD_CASES, ids=[f"{n}={v!r:.20}" for n, v in LOAD_CASES])
def test_accepted_load_values_load(tiny_model_dir, name, value):
    s = qlora_nb.load(str(tiny_model_dir), **{"r": 4, "alpha": 8, name: value})
    assert getattr(s.config, name) == value


GEN_CASES = [(name, v) for name in ("seed", "temperature", "top_p") for v in _accepted(GenerateConfig, name)]


@pytest.fixture(scope="module")
def fresh_session(tiny_model_dir):  # the training cases above leave NaN adapters behind (learning_rate 1e308)
    return qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0)


@pytest.mark.parametrize("name,value", GEN_CASES, ids=[f"{n}={v!r:.20}" for n, v in GEN_CASES])
def test_accepted_generation_values_generate(fresh_session, name, value):
    try:
        fresh_session.generate("hi", **{"max_new_tokens": 2, "sample": True, name: value})
    except QloraError as exc:
        assert BUG not in str(exc)


PLAN_NUMERIC = [f.name for f in dataclasses.fields(PlanConfig) if field_type(PlanConfig, f.name) in (int, float)]
PLAN_CASES = [(name, v) for name in PLAN_NUMERIC for v in _accepted(PlanConfig, name)]


@pytest.mark.parametrize("name,value", PLAN_CASES, ids=[f"{n}={v!r:.20}" for n, v in PLAN_CASES])
def test_accepted_plan_values_plan(name, value):
    try:
        qlora_nb.plan(model="smollm2-135m", gpu="24GB", **{name: value})
    except QloraError as exc:
        assert BUG not in str(exc)


# ----------------------------------------------------------------------------- through the magics
@pytest.fixture(scope="module")
def shell(tmp_path_factory, tiny_model_dir):
    from IPython.testing import globalipapp

    tmp = tmp_path_factory.mktemp("boundaries")
    ip = globalipapp.start_ipython() or globalipapp.get_ipython()
    ip.run_line_magic("load_ext", "qlora_nb")
    ip.user_ns["qlora"] = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0)
    (tmp / "data.jsonl").write_text('{"prompt": "a", "completion": "b"}\n' * 4)
    ip.user_ns["qlora"].save(tmp / "saved")
    yield ip, tmp
    ip.run_line_magic("unload_ext", "qlora_nb")
    ip.user_ns.pop("qlora", None)


LONG = "n" * 300
SHELL = [
    ("%%qlora_train\ndata: data.jsonl\nseed: 4294967296\nmax_steps: 1", ["seed", "<= 4294967295"]),
    ("%%qlora_train\ndata: data.jsonl\nseed: 18446744073709551616\nmax_steps: 1", ["seed"]),
    ("%qlora_load --seed 4294967296", ["seed", "<= 4294967295"]),
    ('%qlora_compare "hi" --seed 4294967296', ["seed"]),
    (f"%qlora_save {LONG}", ["bytes long", "at most"]),
    (f"%qlora_save adapters/{LONG}/x", ["bytes long"]),
    ("%qlora_load_adapter saved --name base", ["reserved"]),
    ("%qlora_load_adapter saved --name a.b", ["a dot"]),
    ("%qlora_load_adapter saved --name 'a/b'", ["path separator"]),
    ("%qlora_load_adapter saved --name ''", ["adapter name"]),
    ("%qlora_load --adapter-name base", ["reserved"]),
    ("%qlora_load --adapter-name a.b", ["a dot"]),
    ("%%qlora_train\ndata: data.jsonl\nlr: 1e-3\nlearning_rate: 2e-4", ["'lr' and 'learning_rate' both set"]),
    ("%%qlora_train\ndata: data.jsonl\noptim: adamw\noptimizer: adamw_8bit", ["both set"]),
    ("%%qlora_train\ndata: data.jsonl\nmax_steps: 0", ["max_steps 0", "-1"]),
    ("%%qlora_train\ndata: data.jsonl\nrun_name: ../../x\nmax_steps: 1", ["run_name", "outside"]),
    ("%%qlora_train\ndata: data.jsonl\nrun_name: \"a\\nb\"\nmax_steps: 1", ["run_name", "line-break"]),
    ("%%qlora_train\ndata: .\nmax_steps: 1", ["is a folder"]),
    ("%qlora_load --quant fp4 --bits 8", ["quant", "4-bit data type"]),
    ("%qlora_plan --quant fp4 --method lora", ["quant"]),
    ('%qlora_compare "hi" --n -1', ["--n", "only applies with --data"]),
    ('%qlora_compare "A" and "B"', ["mixes quoted and unquoted"]),
]


@pytest.mark.parametrize("cell,expect", SHELL, ids=[c.replace("\n", " ")[:60] for c, _ in SHELL])
def test_magic_boundaries_are_one_named_paragraph(shell, monkeypatch, cell, expect):
    from test_bad_input import check_one_paragraph, run_cell

    ip, tmp = shell
    monkeypatch.chdir(tmp)
    before = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))
    adapters = dict(ip.user_ns["qlora"].adapters)
    result, out = run_cell(ip, cell)
    assert isinstance(result.error_in_exec, QloraError), out
    text = check_one_paragraph(out, expect)
    assert BUG not in text
    assert sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*")) == before  # nothing written
    assert dict(ip.user_ns["qlora"].adapters) == adapters


def test_two_quoted_prompts_are_two_rows(shell, monkeypatch):
    from test_bad_input import run_cell

    ip, tmp = shell
    monkeypatch.chdir(tmp)
    for cell, n in [('%qlora_compare "A" "B" --max-new-tokens 2', 2), ("%qlora_compare 'A' \"B\" 'C' --max-new-tokens 2", 3),
                    ("%qlora_compare just some words --max-new-tokens 2", 1), ('%qlora_compare "one prompt" --max-new-tokens 2', 1)]:
        result, out = run_cell(ip, cell)
        assert result.success, out
        prompts = [r["prompt"] for r in ip.user_ns["compare_result"]]
        assert len(prompts) == n, (cell, prompts)
    assert prompts == ["one prompt"]
