"""Unload frees the model, OOM is explained and keeps the checkpoint, an interrupted save tears nothing."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

from qlora_nb.engine.lifecycle import GENERIC_OOM_ADVICE, explain_oom, unload_session
from qlora_nb.errors import QloraError, QloraOOMError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def shell():
    from IPython.testing import globalipapp

    ip = globalipapp.start_ipython() or globalipapp.get_ipython()  # start_ipython returns None once started
    ip.run_line_magic("load_ext", "qlora_nb")
    yield ip
    ip.run_line_magic("unload_ext", "qlora_nb")


def _quiet_run(ip, cell):
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        res = ip.run_cell(cell, store_history=True)
    return res, buf.getvalue()


# ------------------------------------------------------------------------ unload
def test_unload_clears_out_history_traceback_and_namespace(shell, tiny_model_dir):
    """After %qlora_unload nothing in the shell keeps the model alive, even Out[n], _ and the last traceback."""
    res, out = _quiet_run(shell, f"%qlora_load {tiny_model_dir} --r 4 --quiet")
    assert res.success, out
    model_ref = weakref.ref(shell.user_ns["qlora"].model)
    session_ref = weakref.ref(shell.user_ns["qlora"])
    _quiet_run(shell, "qlora")  # Out[n] and _ now hold the session
    _quiet_run(shell, "qlora.model")  # ...and the model
    _quiet_run(shell, "def f(m):\n    raise ValueError('x')\nf(qlora.model)")  # the traceback's frame holds it
    # ipywidgets keeps every widget in a registry until closed: a dashboard holding the session
    res, out = _quiet_run(shell, "from qlora_nb.views.dashboard import TrainingDashboard\n"
                                 "dash = TrainingDashboard(session=qlora)\ndel dash")
    assert res.success, out
    res, out = _quiet_run(shell, "qlora.train(data=[{'prompt': 'a', 'completion': 5}])")  # frames hold `session`
    assert isinstance(res.error_in_exec, QloraError), out
    res, out = _quiet_run(shell, "%qlora_unload")
    assert res.success, out
    assert "unloaded 'qlora'" in out and "released" in out and "RSS" in out
    assert "qlora" not in shell.user_ns
    gc.collect()
    holders = [([k for k, v in r.items() if v is model_ref()], len(r), sorted(r)[:60],
                 [type(x) for x in gc.get_referrers(r)]) if isinstance(r, dict) else type(r)
               for r in gc.get_referrers(model_ref())] if model_ref() is not None else []
    assert model_ref() is None, (out, holders)
    assert session_ref() is None
    res, out = _quiet_run(shell, "%qlora_unload")
    assert "no session named 'qlora'" in out and "Traceback" not in out


def test_unload_twin_reports_bytes_and_later_use_is_a_clear_error(tiny_session):
    led = tiny_session.ledger(measure=False).as_dict()
    expected = sum(v for k, v in led.items() if k != "activations_and_other")
    model_ref = weakref.ref(tiny_session.model)
    assert tiny_session.unload() == expected > 0
    gc.collect()
    assert model_ref() is None
    assert "unloaded" in repr(tiny_session)
    with pytest.raises(QloraError, match="unloaded"):
        tiny_session.generate("hi")
    with pytest.raises(QloraError, match="unloaded"):
        tiny_session.ledger()
    assert tiny_session.unload() == 0


_RSS_SCRIPT = r"""
import ctypes, gc, json, sys
sys.path.insert(0, "tests")
from pathlib import Path
from conftest import build_tiny_model_dir
d = Path(sys.argv[1])
build_tiny_model_dir(d, hidden_size=1024, intermediate_size=4096, num_hidden_layers=4, num_attention_heads=16,
                     num_key_value_heads=4)
import bitsandbytes, peft, torch, transformers  # imports are not the model: measure after them
from IPython.testing.globalipapp import start_ipython
from qlora_nb.memory.ledger import rss_bytes
ip = start_ipython()
ip.run_line_magic("load_ext", "qlora_nb")
trim = lambda: (gc.collect(), ctypes.CDLL("libc.so.6").malloc_trim(0))
build_tiny_model_dir(d.with_name("warm"))  # one-time costs (kernels, tokenizer, caches) are not the model's
assert ip.run_cell(f"%qlora_load {d.with_name('warm')} --r 4 --quiet --name warm").success
assert ip.run_cell("%qlora_unload --session warm").success
trim(); r0 = rss_bytes()
assert ip.run_cell(f"%qlora_load {d} --r 4 --quiet").success
ip.run_cell("qlora")                                  # Out[n], _ hold the session
ip.run_cell("m = qlora.model; 1/0"); ip.run_cell("del m")  # the last traceback holds the model
s = ip.user_ns["qlora"]
model_bytes = sum(v for k, v in s.ledger(measure=False).as_dict().items() if k != "activations_and_other")
del s
trim(); r1 = rss_bytes()
assert ip.run_cell("%qlora_unload").success
trim(); r2 = rss_bytes()
print(json.dumps({"model_bytes": model_bytes, "loaded": r1 - r0, "freed": r1 - r2, "left": r2 - r0}))
"""


def test_unload_gives_back_at_least_90_percent_of_the_model_bytes(tmp_path):
    """RSS in a fresh process: a 4-bit model (~33 MB of tensors) loaded, referenced from Out/_/traceback, unloaded."""
    proc = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(tmp_path / "m")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    assert m["model_bytes"] > 25e6
    assert m["freed"] >= 0.9 * m["model_bytes"], m
    # RSS also counts the safetensors pages the loaded model keeps mapped: those come back too.
    assert m["freed"] >= 0.9 * m["loaded"], m


# --------------------------------------------------------------------------- OOM
@pytest.mark.parametrize("exc,device", [
    (MemoryError(), "memory"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "GPU"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
                  "allocate 123 bytes"), "memory"),
])
def test_explain_oom_recognises_memory_errors(exc, device):
    err = explain_oom(exc, "%qlora_train")
    assert isinstance(err, QloraOOMError)
    text = str(err)
    assert text.startswith("%qlora_train: ran out of " + device)
    for advice in ("gradient_checkpointing", "batch_size", "cutoff_len", "paged_adamw_8bit"):
        assert advice in text


def test_explain_oom_torch_oom_and_others():
    import torch

    err = explain_oom(torch.OutOfMemoryError("CUDA out of memory."), "%%qlora_train", checkpoint="runs/x/checkpoint-4")
    assert "ran out of GPU" in str(err) and "runs/x/checkpoint-4" in str(err) and err.checkpoint.endswith("-4")
    assert explain_oom(RuntimeError("shape mismatch"), "x") is None
    assert explain_oom(ValueError("out of memory"), "x") is None
    assert explain_oom(KeyError("k"), "x") is None


def test_explain_oom_asks_the_planner_for_the_cheapest_change(tiny_session, monkeypatch):
    """The run's own settings go to the planner; its cheapest change that fits is the advice."""
    planner = pytest.importorskip("qlora_nb.engine.forecast.planning")
    from qlora_nb.engine import lifecycle

    run = {"batch_size": 64, "cutoff_len": 4096, "learning_rate": 1e-3, "data": "x.jsonl"}
    need = planner.plan_session(tiny_session, measure=False, batch_size=64, cutoff_len=4096).total
    gpu = f"{need * 0.8 / 2**30:.6f}GB"
    err = explain_oom(MemoryError(), "%%qlora_train", session=tiny_session, options={**run, "gpu": gpu})
    expected = planner.cheapest_fix(tiny_session, batch_size=64, cutoff_len=4096, gpu=gpu)
    assert expected and f"The planner's cheapest change: {expected}" in str(err)
    generic_4bit = GENERIC_OOM_ADVICE.replace("; or load with bits=4.", ".")  # the session is 4-bit already
    monkeypatch.setattr(planner, lifecycle.PLANNER_FIX, lambda *a, **k: 1 / 0)
    assert lifecycle.cheapest_change(tiny_session, run) == generic_4bit  # a planner failure never hides OOM
    monkeypatch.setattr(planner, lifecycle.PLANNER_FIX, lambda *a, **k: None)  # "it fits": generic advice
    assert lifecycle.cheapest_change(tiny_session, run) == generic_4bit


def test_oom_inside_a_magic_is_one_paragraph_with_advice(shell, tiny_model_dir, monkeypatch):
    import qlora_nb.engine.session as session_mod

    def oom(*a, **k):
        raise MemoryError()

    monkeypatch.setattr(session_mod, "load", oom)
    res, out = _quiet_run(shell, f"%qlora_load {tiny_model_dir}")
    assert isinstance(res.error_in_exec, QloraOOMError)
    line = out.strip()
    assert line.startswith("QloraOOMError: %qlora_load: ran out of memory") and "\n" not in line
    assert "gradient_checkpointing" in line and "Traceback" not in out
    assert _quiet_run(shell, "1 + 1")[0].result == 2


def test_oom_while_loading_twin_is_explained(tiny_model_dir, monkeypatch):
    import qlora_nb
    import qlora_nb.engine.model.quantize as quantize

    def oom(*a, **k):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1234 bytes")

    monkeypatch.setattr(quantize, "load_base", oom)
    with pytest.raises(QloraOOMError, match=r"^qlora_nb.load: ran out of memory") as info:
        qlora_nb.load(str(tiny_model_dir))
    assert "bits=4" in str(info.value) and info.value.__context__.__traceback__ is None


def _rows(n=16):
    return [{"prompt": f"Add {i} and {i}: ", "completion": f"{2 * i}"} for i in range(n)]


def test_oom_during_training_stops_cleanly_and_keeps_the_checkpoint(tiny_session, tmp_path):
    """A MemoryError in the forward at step 4 (save_steps 2): QloraOOMError naming checkpoint-2, session trains on."""
    calls = {"n": 0}
    layer = tiny_session.model.base_model.model.model.layers[0]

    def hook(module, args):
        if module.training:
            calls["n"] += 1
            if calls["n"] == 4:
                raise MemoryError()

    handle = layer.register_forward_pre_hook(hook)
    out = tmp_path / "run"
    try:
        with pytest.raises(QloraOOMError) as info:
            tiny_session.train(data=_rows(), max_steps=6, save_steps=2, batch_size=2, val_split=0, output_dir=str(out),
                               cutoff_len=32)
    finally:
        handle.remove()
    text = str(info.value)
    assert "ran out of memory" in text and "checkpoint-2" in text and "batch_size" in text
    assert (out / "checkpoint-2" / "adapter_model.safetensors").is_file()
    assert all(p.grad is None for p in tiny_session.model.parameters() if p.requires_grad)
    result = tiny_session.train(data=_rows(), max_steps=1, batch_size=2, val_split=0, output_dir=str(out / "again"),
                                cutoff_len=32)
    assert result.metrics["steps"] == 1 and result.history[0]["loss"] > 0


# ----------------------------------------------------------------- atomic saves
def _torn_save(real):
    """A safetensors save that writes half the file, then the user presses interrupt."""

    def save(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) // 2])
        raise KeyboardInterrupt

    return save


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_interrupt_while_saving_an_adapter_keeps_the_previous_one(tiny_session, tmp_path, monkeypatch):
    import peft.peft_model as pm
    import torch
    from safetensors.torch import load_file

    target = tmp_path / "adapter"
    tiny_session.save(target)
    before = _files(target)
    with torch.no_grad():
        for p in tiny_session.model.parameters():
            if p.requires_grad:
                p.add_(0.25)
    monkeypatch.setattr(pm, "safe_save_file", _torn_save(pm.safe_save_file))
    with pytest.raises(KeyboardInterrupt):
        tiny_session.save(target, overwrite=True)
    assert _files(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # no temporary folder left behind
    monkeypatch.undo()
    tiny_session.save(target, overwrite=True)
    after = _files(target)
    assert after["adapter_model.safetensors"] != before["adapter_model.safetensors"]
    assert load_file(str(target / "adapter_model.safetensors"))


def test_interrupt_while_training_saves_its_adapter_keeps_the_previous_one(tiny_session, tmp_path, monkeypatch):
    import peft.peft_model as pm

    out = tmp_path / "run"
    opts = dict(max_steps=1, batch_size=2, val_split=0, output_dir=str(out), cutoff_len=32)
    first = tiny_session.train(data=_rows(), **opts)
    adapter = Path(first.adapter_dir)
    before = _files(adapter)
    monkeypatch.setattr(pm, "safe_save_file", _torn_save(pm.safe_save_file))
    with pytest.raises(KeyboardInterrupt):
        tiny_session.train(data=_rows(), overwrite=True, learning_rate=1e-2, **opts)
    assert _files(adapter) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def _torn_at(pm, torn_calls: set[int]):
    real, calls = pm.safe_save_file, {"n": 0}

    def save(tensors, filename, metadata=None):
        calls["n"] += 1
        if calls["n"] in torn_calls:
            return _torn_save(real)(tensors, filename, metadata=metadata)
        return real(tensors, filename, metadata=metadata)

    return save


def test_interrupt_during_a_checkpoint_save_resumes_from_the_previous_one(tiny_session, tmp_path, monkeypatch):
    """Ctrl-C while Trainer writes checkpoint-4, and again while the engine rewrites it (issue 15): resume ignores
    the torn folder and continues from checkpoint-2, and the run's note says so."""
    import peft.peft_model as pm

    from qlora_nb.engine.lifecycle import last_complete_checkpoint

    # save 1: checkpoint-2 whole; save 2: checkpoint-4 cut in the middle of its weights; save 3: the rewrite, cut too
    monkeypatch.setattr(pm, "safe_save_file", _torn_at(pm, {2, 3}))
    out = tmp_path / "run"
    opts = dict(data=_rows(), batch_size=2, val_split=0, output_dir=str(out), cutoff_len=32, save_steps=2)
    first = tiny_session.train(max_steps=6, **opts)
    assert first.interrupted
    assert (out / "checkpoint-4").is_dir() and not (out / "checkpoint-4" / "trainer_state.json").exists()
    assert last_complete_checkpoint(out) == str(out / "checkpoint-2") == str(first.checkpoint)
    assert "writing checkpoint-4 failed" in first.note and str(out / "checkpoint-2") in first.note
    monkeypatch.undo()
    resumed = tiny_session.train(max_steps=6, resume=True, **opts)
    steps = [h["step"] for h in resumed.history if "loss" in h]
    assert steps[0] == 3 and steps[-1] == 6 and not resumed.interrupted


def test_interrupt_during_a_checkpoint_save_rewrites_that_checkpoint_whole(tiny_session, tmp_path, monkeypatch):
    """Issue 15: the step had finished when its checkpoint save was interrupted, so the engine writes it again."""
    import peft.peft_model as pm

    from qlora_nb.engine.lifecycle import last_complete_checkpoint

    monkeypatch.setattr(pm, "safe_save_file", _torn_at(pm, {2}))
    out = tmp_path / "run"
    opts = dict(data=_rows(), batch_size=2, val_split=0, output_dir=str(out), cutoff_len=32, save_steps=2)
    first = tiny_session.train(max_steps=6, **opts)
    assert first.interrupted and "checkpoint-4 was written" in first.note
    assert last_complete_checkpoint(out) == str(out / "checkpoint-4") == str(first.checkpoint)
    monkeypatch.undo()
    resumed = tiny_session.train(max_steps=6, resume=True, **opts)
    steps = [h["step"] for h in resumed.history if "loss" in h]
    assert steps[0] == 5 and steps[-1] == 6 and not resumed.interrupted


def test_atomic_text_write_interrupted_keeps_the_old_file(tmp_path, monkeypatch):
    from qlora_nb import fileio

    target = tmp_path / "train_config.json"
    fileio.write_text_atomic(target, '{"v": 1}')

    def torn(self, text, *a, **k):
        Path.write_bytes(self, text[:3].encode())
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", torn)
    with pytest.raises(KeyboardInterrupt):
        fileio.write_text_atomic(target, '{"v": 2}')
    monkeypatch.undo()
    assert target.read_text() == '{"v": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["train_config.json"]


def test_unload_session_tolerates_a_half_built_session():
    class Half:
        model = None

    assert unload_session(Half()) == 0
