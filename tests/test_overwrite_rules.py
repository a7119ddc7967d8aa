"""Issue 15, class 2: ``--overwrite`` only replaces what the toolkit wrote.

One table of what is at the target (nothing, an empty folder, a user's file,
a user's folder, a folder the toolkit wrote, the base model folder, the
notebook's folder...) against overwrite on/off, run through save, export and
merge; then the training run's output_dir.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qlora_nb.errors import QloraError
from qlora_nb.overwrite import MARKER, check_target


def _user_file(root: Path) -> Path:
    p = root / "notes.txt"
    p.write_text("my notes")
    return p


def _user_dir(root: Path) -> Path:
    d = root / "notes"
    d.mkdir()
    (d / "todo.txt").write_text("todo")
    return d


def _empty(root: Path) -> Path:
    d = root / "empty"
    d.mkdir()
    return d


def _toolkit(root: Path) -> Path:
    d = root / "written"
    d.mkdir()
    (d / MARKER).write_text('{"kind": "adapter"}')
    (d / "adapter_model.safetensors").write_bytes(b"old")
    return d


def _legacy_adapter(root: Path) -> Path:
    d = root / "legacy"
    d.mkdir()
    (d / "qlora_nb.json").write_text('{"format": 1}')
    return d


def _legacy_merged(root: Path) -> Path:
    d = root / "merged"
    d.mkdir()
    (d / "qlora_nb_merge.json").write_text('{"merged_from": {}}')
    (d / "model.safetensors").write_bytes(b"x")
    return d


def _legacy_export(root: Path) -> Path:
    d = root / "job"
    d.mkdir()
    for name in ("train.py", "accelerate_fsdp.yaml", "README.md"):
        (d / name).write_text("x")
    return d


def _user_train_py(root: Path) -> Path:  # a user's own project with a train.py is not an export
    d = root / "project"
    d.mkdir()
    (d / "train.py").write_text("print('mine')")
    return d


def _fake_legacy(root: Path) -> Path:  # a user's qlora_nb.json that is not ours
    d = root / "fake"
    d.mkdir()
    (d / "qlora_nb.json").write_text('{"something": 1}')
    return d


def _missing(root: Path) -> Path:
    return root / "new" / "deeper"


# (case, make target, overwrite, error fragments or None when allowed)
TABLE = [
    ("missing", _missing, False, None),
    ("missing-ow", _missing, True, None),
    ("empty", _empty, False, None),
    ("empty-ow", _empty, True, None),
    ("user-file", _user_file, False, ["is a file", "never replaced"]),
    ("user-file-ow", _user_file, True, ["is a file", "never replaced"]),
    ("user-dir", _user_dir, False, ["already exists", "todo.txt", "--overwrite"]),
    ("user-dir-ow", _user_dir, True, ["did not write", "todo.txt"]),
    ("toolkit", _toolkit, False, ["already exists", "--overwrite"]),
    ("toolkit-ow", _toolkit, True, None),
    ("legacy-adapter-ow", _legacy_adapter, True, None),
    ("fake-legacy-ow", _fake_legacy, True, ["did not write", "qlora_nb.json"]),
    ("legacy-merged-ow", _legacy_merged, True, None),
    ("legacy-export-ow", _legacy_export, True, None),
    ("user-train-py-ow", _user_train_py, True, ["did not write", "train.py"]),
]


@pytest.mark.parametrize("case,make,overwrite,error", TABLE, ids=[t[0] for t in TABLE])
def test_check_target_table(tmp_path, case, make, overwrite, error):
    target = make(tmp_path)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    if error is None:
        assert check_target(target, overwrite=overwrite) == target
        return
    with pytest.raises(QloraError) as info:
        check_target(target, overwrite=overwrite)
    for e in error:
        assert e in str(info.value), (e, str(info.value))
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("target", [".", "./", "..", "~", "/"])
def test_notebook_folder_home_and_root_are_never_targets(tmp_path, monkeypatch, target):
    work = tmp_path / "a" / "nb"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "a"))
    for overwrite in (False, True):
        with pytest.raises(QloraError, match="notebook's current folder|contains the notebook|home|root"):
            check_target(target, overwrite=overwrite)


def test_base_folder_and_its_parents_are_protected(tmp_path):
    base = tmp_path / "models" / "base"
    base.mkdir(parents=True)
    (base / MARKER).write_text("{}")  # even a merged model the toolkit wrote, once it is the session's base
    for target in (base, base.parent):
        with pytest.raises(QloraError, match="base model folder"):
            check_target(target, overwrite=True, protected=[(base, "the session's base model folder")])
    assert check_target(base / "adapter", overwrite=False, protected=[(base, "x")]) == base / "adapter"


# ----------------------------------------------------------------------------- through the engine
@pytest.fixture(scope="module")
def trained(tiny_model_dir):
    import torch

    import qlora_nb

    s = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0)
    with torch.no_grad():
        for n, p in s.model.named_parameters():
            if "lora_B" in n:
                p.add_(0.01)
    return s


def _operations(session, tmp_path):
    data = tmp_path / "d.jsonl"
    if not data.exists():
        data.write_text('{"prompt": "a", "completion": "b"}\n')
    return {
        "save": lambda t, ow: session.save(t, overwrite=ow),
        "export": lambda t, ow: session.export(t, overwrite=ow, data=str(data)),
        "merge": lambda t, ow: session.merge(t, overwrite=ow, verify=False, dtype="fp32", verbose=False),
    }


@pytest.mark.parametrize("op", ["save", "export", "merge"])
def test_every_writer_keeps_user_files_and_replaces_its_own(trained, tmp_path, op):
    run = _operations(trained, tmp_path)[op]
    notes = _user_dir(tmp_path)
    for ow in (False, True):
        with pytest.raises(QloraError, match="todo.txt"):
            run(notes, ow)
    assert (notes / "todo.txt").read_text() == "todo" and len(list(notes.iterdir())) == 1
    f = _user_file(tmp_path)
    with pytest.raises(QloraError, match="is a file"):
        run(f, True)
    assert f.read_text() == "my notes"
    out = run(tmp_path / "mine", False)
    out = Path(getattr(out, "directory", out))
    assert (out / MARKER).is_file()
    again = run(tmp_path / "mine", True)  # the toolkit's own folder: replaced
    assert Path(getattr(again, "directory", again)) == out
    with pytest.raises(QloraError, match="base model folder"):
        run(trained.model_path, True)
    assert (trained.model_path / "config.json").is_file()


def test_save_dot_names_the_folder(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "analysis.ipynb").write_text("{}")
    for ow in (False, True):
        with pytest.raises(QloraError, match="notebook's current folder") as info:
            trained.save(".", overwrite=ow)
        assert "looks like a bug" not in str(info.value) and "adapters/my-run" in str(info.value)
    assert (tmp_path / "analysis.ipynb").read_text() == "{}"


OUTPUT_DIRS = [
    ("file", lambda root: _user_file(root), True, ["is a file"]),
    ("user-dir", lambda root: _user_dir(root), False, ["already holds a run"]),
    ("user-dir-ow", lambda root: _user_dir(root), True, ["did not write", "todo.txt"]),
    ("under-a-file", lambda root: _user_file(root) / "run", False, ["is a file, not a folder"]),
]


@pytest.mark.parametrize("case,make,overwrite,expect", OUTPUT_DIRS, ids=[o[0] for o in OUTPUT_DIRS])
def test_training_output_dir_mistakes_are_named_before_any_work(trained, tmp_path, case, make, overwrite, expect):
    out = make(tmp_path)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(QloraError) as info:
        trained.train(data=[{"prompt": "a", "completion": "b"}] * 4, output_dir=str(out), overwrite=overwrite,
                      max_steps=1, val_split=0)
    text = str(info.value)
    assert "output_dir" in text and "looks like a bug" not in text
    for e in expect:
        assert e in text, (e, text)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_dir_is_named(trained, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(QloraError, match="not writable"):
            trained.train(data=[{"prompt": "a", "completion": "b"}] * 4, output_dir=str(locked / "run"),
                          max_steps=1, val_split=0)
    finally:
        locked.chmod(0o700)
