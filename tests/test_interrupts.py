"""Issue 15, class 8: interrupts always leave a resumable state and say which.

Real SIGINTs are sent to this process from the engine's own events, at the
points that matter: between steps, inside a step's optimizer update (the
``ledger`` event fires after ``optimizer.step()``, before the step counters
move), and before the first step.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

import qlora_nb
from qlora_nb.errors import QloraError

pytestmark = pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                                reason="signal handlers need the main thread")

ROWS = [{"prompt": f"Q{i}: ", "completion": f"answer {i}"} for i in range(8)]


@pytest.fixture
def session(tiny_model_dir):
    return qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0)


def _interrupt_twice_at(kind: str, step: int | None):
    sent = {"n": 0}

    def on_event(e):
        if e["kind"] == kind and (step is None or e.get("step") == step) and not sent["n"]:
            sent["n"] = 2
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    return on_event


def _opts(out, **kw):
    return dict(data=ROWS, batch_size=2, val_split=0, output_dir=str(out), warmup_steps=0, cutoff_len=32,
                learning_rate=1e-2, **kw)


# (where the two interrupts land, the step they land on, the checkpoint expected, fragments of the note)
CASES = [
    ("between-steps", "step", 2, "checkpoint-2", ["Interrupted a second time after step 2", "checkpoint-2 was written",
                                                 "resume: true"]),
    ("in-optimizer-update", "ledger", 2, "checkpoint-2", []),  # deferred: the step finishes, its checkpoint is written
    ("before-first-step", "train_begin", None, None, ["before the first step finished", "no checkpoint",
                                                       "without resume"]),
]


@pytest.mark.parametrize("case,kind,step,ckpt,note", CASES, ids=[c[0] for c in CASES])
def test_second_interrupt_leaves_a_checkpoint_or_says_none(session, tmp_path, capfd, case, kind, step, ckpt, note):
    out = tmp_path / "run"
    result = session.train(on_event=_interrupt_twice_at(kind, step), max_steps=6, **_opts(out))
    assert result.interrupted
    assert signal.getsignal(signal.SIGINT) is not None  # the run's handler was removed again
    if ckpt is None:
        assert result.checkpoint is None and not list(out.glob("checkpoint-*"))
        with pytest.raises(QloraError, match="no checkpoint to resume"):
            session.train(max_steps=6, resume=True, **_opts(out))
    else:
        assert result.checkpoint is not None and result.checkpoint.name == ckpt
        resumed = session.train(max_steps=6, resume=True, **_opts(out))
        steps = [h["step"] for h in resumed.history if "loss" in h]
        assert steps[0] == int(ckpt.split("-")[1]) + 1 and steps[-1] == 6 and not resumed.interrupted
    for fragment in note:
        assert fragment in result.note, (fragment, result.note)
    if case == "in-optimizer-update":
        assert "finishing this step" in capfd.readouterr().err


def test_one_interrupt_still_stops_at_the_step_boundary(session, tmp_path):
    sent = {"n": 0}

    def once(e):
        if e["kind"] == "step" and e["step"] == 2 and not sent["n"]:
            sent["n"] = 1
            os.kill(os.getpid(), signal.SIGINT)

    result = session.train(on_event=once, max_steps=6, **_opts(tmp_path / "run"))
    assert result.interrupted and result.checkpoint.name in ("checkpoint-2", "checkpoint-3") and result.note == ""


def _raise_interrupt(*a, **k):
    raise KeyboardInterrupt


def test_interrupt_while_reading_data_is_one_line(session, tmp_path, monkeypatch):
    import qlora_nb.data.load as load_mod

    monkeypatch.setattr(load_mod, "load_data", _raise_interrupt)
    with pytest.raises(KeyboardInterrupt) as info:  # still an interrupt for code that catches those
        session.train(max_steps=2, **_opts(tmp_path / "run"))
    assert isinstance(info.value, QloraError)
    assert str(info.value).startswith("train option 'data': interrupted while reading and checking the training data")
    assert not session.runs


def test_interrupts_during_load_and_data_prep_print_one_paragraph(tiny_model_dir, tmp_path, monkeypatch):
    from IPython.testing import globalipapp
    from test_bad_input import run_cell

    def check_one_paragraph(out, expect):
        lines = [ln for ln in out.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("QloraInterrupted: "), out
        assert "Traceback" not in out and "KeyboardInterrupt" not in out
        for e in expect:
            assert e in lines[0], (e, out)

    import qlora_nb.data.load as load_mod
    import qlora_nb.engine.model.quantize as quantize

    ip = globalipapp.start_ipython() or globalipapp.get_ipython()
    ip.run_line_magic("load_ext", "qlora_nb")
    s = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0)
    ip.user_ns["qlora"] = s
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "b"}\n' * 4)
    try:
        monkeypatch.setattr(quantize, "load_base", _raise_interrupt)
        result, out = run_cell(ip, f"%qlora_load {tiny_model_dir} --quiet")
        check_one_paragraph(out, ["interrupted while loading", "a session loaded before is kept"])
        assert ip.user_ns["qlora"] is s and not result.success
        monkeypatch.setattr(load_mod, "load_data", _raise_interrupt)
        result, out = run_cell(ip, f"%%qlora_train\ndata: {tmp_path}/d.jsonl\nmax_steps: 1\n"
                                   f"output_dir: {tmp_path}/run")
        check_one_paragraph(out, ["interrupted while reading and checking the training data", "unchanged"])
        assert not s.runs
    finally:
        ip.run_line_magic("unload_ext", "qlora_nb")
        ip.user_ns.pop("qlora", None)


def test_stop_during_the_probe_generations_ends_them_and_the_run(session, tmp_path):
    """Issue 25 (browser review): a Stop clicked while the probes generate ends them at the next token, not after
    the whole generation; the run stops at that step with its checkpoint and shows no half-written probes."""
    import qlora_nb.engine.training.train_events as train_events

    rows = [{"prompt": f"Q{i}: ", "completion": f"answer {i} " * 6} for i in range(12)]
    tokens: list[int] = []
    real = train_events.generate_probes

    def counting(*args, **kwargs):  # how many tokens each probe generation ran
        texts, cut = real(*args, **kwargs)
        tok = session.tokenizer
        tokens.append(max((len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts), default=0))
        return texts, cut

    seen: list[dict] = []

    def on_event(e):
        seen.append(e)
        if e["kind"] == "phase" and e.get("phase") == "probes":
            session.request_stop()  # as the dashboard's Stop does, while the probes are about to generate

    train_events.generate_probes = counting
    try:
        result = session.train(on_event=on_event, max_steps=8, eval_steps=2, n_probes=2,
                               **{**_opts(tmp_path / "run"), "data": rows, "val_split": 2})
    finally:
        train_events.generate_probes = real
    phases = [e for e in seen if e["kind"] == "phase"]
    assert phases and phases[0]["text"] == "probes at step 2"
    assert result.interrupted and result.checkpoint is not None and result.checkpoint.name == "checkpoint-2"
    assert not [e for e in seen if e["kind"] == "probe"]  # no half-written probes
    assert tokens and max(tokens) <= 2  # the stop was heard at the first token (of up to 96)


@pytest.mark.parametrize("fmt", ["hf", "gguf"])
def test_interrupt_during_a_merge_is_one_line_and_changes_nothing(tiny_model_dir, tmp_path, monkeypatch, fmt):
    """Issue 25: SIGINT during a merge (here while the written copy is verified): one paragraph, nothing under
    DIR, no temporary folder left, and the session exactly as it was."""
    import torch
    from IPython.testing import globalipapp
    from test_bad_input import run_cell

    import qlora_nb.engine.export.gguf_check as gguf_check
    import qlora_nb.engine.export.merge as merge_mod

    s = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0, compute_dtype="float32")
    for n, p in s.model.named_parameters():
        if ".lora_B." in n:
            p.data.fill_(0.01)
    state = lambda: ([n for n, p in s.model.named_parameters() if p.requires_grad], s.model.training,  # noqa: E731
                     s.model.active_adapter, list(s.adapters), s.model.peft_config["default"].r)
    before = state()
    weights = {n: p.detach().clone() for n, p in s.model.named_parameters() if "lora_" in n}
    target = "verify_merge" if fmt == "hf" else "check_gguf"
    monkeypatch.setattr(merge_mod if fmt == "hf" else gguf_check, target, _raise_interrupt)
    ip = globalipapp.start_ipython() or globalipapp.get_ipython()
    ip.run_line_magic("load_ext", "qlora_nb")
    ip.user_ns["qlora"] = s
    out_dir = tmp_path / "merged"
    try:
        flag = "" if fmt == "hf" else " --format gguf --outtype f32"
        result, out = run_cell(ip, f"%qlora_merge {out_dir}{flag}")
    finally:
        ip.run_line_magic("unload_ext", "qlora_nb")
        ip.user_ns.pop("qlora", None)
    lines = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith("merge needs")]  # the plan before
    assert not result.success and "Traceback" not in out and "KeyboardInterrupt" not in out
    interrupted = [ln for ln in lines if ln.startswith("QloraInterrupted: ")]
    assert lines == interrupted and len(interrupted) == 1 and f"interrupted while merging into {out_dir}" in interrupted[0], out
    assert "Nothing was written" in interrupted[0] and "session is as it was" in interrupted[0]
    assert not out_dir.exists() and [p.name for p in tmp_path.iterdir()] == []  # no temporary folder either
    assert state() == before
    assert all(torch.equal(p, weights[n]) for n, p in s.model.named_parameters() if "lora_" in n)
