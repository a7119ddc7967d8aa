"""``Session.launch`` / ``%qlora_launch`` refuse in the kernel, before any folder or process exists, everything
``%%qlora_train`` refuses, with the same paragraph; relative paths resolve against the notebook's folder (the
kernel's working folder); a launch that fails before its first step leaves no ``runs/launch-*`` folder."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

import qlora_nb
from qlora_nb.engine.rollback import fingerprint
from qlora_nb.engine.scale import launch as launch_module
from qlora_nb.errors import QloraError

ROWS = [{"prompt": f"Q{i}: add {i} and {i + 1}?", "completion": f" {2 * i + 1}"} for i in range(16)]
REAL_POPEN = subprocess.Popen
FAST = dict(warmup_steps=0, batch_size=2, cutoff_len=32, max_steps=2)


@pytest.fixture(scope="module")
def session(tiny_model_dir):
    s = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0)
    yield s
    s.unload()


@pytest.fixture
def notebook(tmp_path, monkeypatch):
    """The kernel's working folder is the notebook's; every Popen fails the test unless a test replaces it."""
    folder = tmp_path / "notebook"
    folder.mkdir()
    monkeypatch.chdir(folder)

    def no_process(*_a, **_k):
        raise AssertionError("a process was started for a launch the kernel should have refused")

    monkeypatch.setattr(launch_module.subprocess, "Popen", no_process)
    (folder / "data.jsonl").write_text("\n".join(__import__("json").dumps(r) for r in ROWS) + "\n")
    (folder / "no_completion.jsonl").write_text('{"prompt": "Q"}\n' * 4)
    (folder / "broken.jsonl").write_text('{"prompt": "Q", "completion": " 1"}\n{"prompt": \n')
    return folder


BAD = [
    (dict(data="missing.jsonl"), r"missing\.jsonl"),
    (dict(data="broken.jsonl"), r"broken\.jsonl"),
    (dict(data="no_completion.jsonl"), r"completion"),
    (dict(data="data.jsonl", template="Q: {question}\nA: {answer}"), r"question"),
    (dict(data="data.jsonl", eval_metric="exact_match", val_split=0), r"holds out none"),
    (dict(data="data.jsonl", early_stopping_patience=2, val_split=0), r"early_stopping_patience needs held-out"),
    (dict(data="data.jsonl", probes=[3]), r"probe 1 is a int"),
    (dict(data="data.jsonl", learning_rate=-1), r"learning_rate"),
    (dict(data="data.jsonl", warmup_steps=5, max_steps=2, val_split=0), r"warm"),
]


@pytest.mark.parametrize(("options", "message"), BAD)
def test_launch_refuses_what_train_refuses_with_the_same_paragraph_before_anything_exists(session, notebook,
                                                                                         options, message):
    options = {**FAST, **options}
    with pytest.raises(QloraError) as trained:
        session.train(output_dir=str(notebook / "runs" / "t"), **options)
    before = fingerprint(session)
    with pytest.raises(QloraError, match=message) as launched:
        session.launch(1, **options)
    assert str(launched.value) == str(trained.value)
    assert not list(notebook.glob("runs/launch-*")) and fingerprint(session) == before


@pytest.mark.parametrize("metric", [lambda p, r: 1.0, lambda p: 1.0])
def test_a_metric_function_is_refused_by_launch_as_it_cannot_reach_the_ranks(session, notebook, metric):
    with pytest.raises(QloraError, match=r"eval_metric is a Python function, which cannot be written into config"):
        session.launch(1, data="data.jsonl", eval_metric=metric, val_split=4, **FAST)
    assert not (notebook / "runs").exists()


def test_the_launch_magic_refuses_a_missing_data_file_before_starting(session, notebook):
    from IPython.testing.globalipapp import get_ipython

    ip = get_ipython()
    ip.run_line_magic("load_ext", "qlora_nb")
    ip.user_ns["qlora"] = session
    try:
        with pytest.raises(QloraError, match=r"no data file 'missing\.jsonl'.*the current folder is .*notebook"):
            ip.run_cell_magic("qlora_launch", "--processes 1 --quiet", "data: missing.jsonl\nmax_steps: 2\n")
    finally:
        ip.run_line_magic("unload_ext", "qlora_nb")
        ip.user_ns.pop("qlora", None)
    assert not (notebook / "runs").exists()


def _failing_ranks(seen: list, script: str):
    """Popen that records the job it was given, then runs ``script`` in its place (a launcher that fails)."""
    real = REAL_POPEN

    def popen(cmd, cwd=None, **kwargs):
        seen.append(cwd)
        return real([sys.executable, "-c", script], cwd=cwd, **kwargs)

    return popen


def test_relative_paths_resolve_against_the_notebook_folder(session, notebook, monkeypatch):
    seen: list = []
    monkeypatch.setattr(launch_module.subprocess, "Popen",
                        _failing_ranks(seen, "import sys; print('rank 0: cannot start'); sys.exit(3)"))
    (notebook / "sub").mkdir()
    (notebook / "sub" / "d.jsonl").write_text((notebook / "data.jsonl").read_text())
    for data in ("data.jsonl", "sub/d.jsonl", "./sub/../data.jsonl"):
        with pytest.raises(QloraError):
            session.launch(1, data=data, **FAST)
        job = seen[-1]
        assert job.parent == notebook / "runs" and job.name.startswith("launch-") and job.is_absolute()
    # a named directory is relative to the notebook's folder too, and is kept (it is the user's)
    with pytest.raises(QloraError):
        session.launch(1, data="sub/d.jsonl", directory="jobs/mine", **FAST)
    job = seen[-1]
    assert job == notebook / "jobs" / "mine" and job.is_dir()
    config = yaml.safe_load((job / "config.yaml").read_text())
    assert config["train"]["data"] == "data/d.jsonl" and (job / "data" / "d.jsonl").read_text() == \
        (notebook / "sub" / "d.jsonl").read_text()


@pytest.mark.parametrize("script", ["import sys; print('rank 0 failed: no such file'); sys.exit(1)",
                                    "import os; os.kill(os.getpid(), 9)",
                                    "import sys; sys.exit(2)"])
def test_a_launch_failing_before_its_first_step_leaves_no_folder(session, notebook, monkeypatch, script):
    seen: list = []
    monkeypatch.setattr(launch_module.subprocess, "Popen", _failing_ranks(seen, script))
    with pytest.raises(QloraError, match=r"failed before its first step, so its folder .* was removed") as err:
        session.launch(1, data="data.jsonl", **FAST)
    assert seen and not seen[-1].exists() and not list(notebook.glob("runs/launch-*"))
    if "print" in script:
        assert "no such file" in str(err.value)  # the ranks' last output is in the message, not in a lost log
