"""Issue 15, classes 6 and 9: failed calls roll back; Python twins fail in one paragraph like the magics."""

from __future__ import annotations

import pytest

import qlora_nb
from qlora_nb.engine.rollback import fingerprint, rolled_back_on_error
from qlora_nb.errors import QloraError


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_model_dir):
    """Adapters that fail inside peft or after it: another base's plain peft adapter, torn weights, wrong keys."""
    import torch
    from conftest import build_tiny_model_dir
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("rollback")
    other_dir = build_tiny_model_dir(root / "other-base", hidden_size=32, intermediate_size=64)
    other = qlora_nb.load(str(other_dir), r=4, alpha=8, dropout=0.0)
    with torch.no_grad():
        for n, p in other.model.named_parameters():
            if "lora_B" in n:
                p.add_(0.1)
    other.model.save_pretrained(str(root / "plain-other"))  # plain peft: no qlora_nb.json to check first
    same = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0)
    with torch.no_grad():
        for n, p in same.model.named_parameters():
            if "lora_B" in n:
                p.add_(0.1)
    good = same.save(root / "good")
    torn = root / "torn"
    torn.mkdir()
    for f in good.iterdir():
        (torn / f.name).write_bytes(f.read_bytes())
    w = (torn / "adapter_model.safetensors").read_bytes()
    (torn / "adapter_model.safetensors").write_bytes(w[: len(w) // 2])
    renamed = root / "renamed"
    renamed.mkdir()
    (renamed / "adapter_config.json").write_text((good / "adapter_config.json").read_text())
    tensors = load_file(str(good / "adapter_model.safetensors"))
    save_file({k.replace("layers", "blocks"): v for k, v in tensors.items()}, str(renamed / "adapter_model.safetensors"))
    rank = root / "rank"
    rank.mkdir()
    import json

    cfg = json.loads((good / "adapter_config.json").read_text())
    cfg["r"] = 8  # the config says r=8 but the tensors are r=4: peft fails half-way through registering
    (rank / "adapter_config.json").write_text(json.dumps(cfg))
    (rank / "adapter_model.safetensors").write_bytes((good / "adapter_model.safetensors").read_bytes())
    return {"plain-other": root / "plain-other", "torn": torn, "renamed": renamed, "rank": rank, "good": good}


@pytest.fixture
def session(tiny_model_dir):
    return qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0)


@pytest.mark.parametrize("case", ["plain-other", "torn", "renamed", "rank"])
def test_failed_load_adapter_leaves_the_session_exactly_as_before(session, folders, case):
    session.load_adapter(folders["good"], name="second")  # more than one adapter, a non-default one too
    session.set_adapter("default")
    before = fingerprint(session)
    grads = {n: p.requires_grad for n, p in session.model.named_parameters()}
    with pytest.raises(QloraError) as info:
        session.load_adapter(folders[case], name="broken")
    assert "looks like a bug" not in str(info.value)
    assert fingerprint(session) == before
    assert {n: p.requires_grad for n, p in session.model.named_parameters()} == grads
    assert session.load_adapter(folders["good"], name="broken") == "broken"  # the name is free again


def test_without_the_rollback_peft_leaves_a_half_registered_adapter(session, folders):
    """The defect itself: the engine function alone (no rollback) changes the model when peft fails."""
    from qlora_nb.engine.export.export import load_adapter

    before = fingerprint(session)
    with pytest.raises(QloraError):
        load_adapter(session, folders["plain-other"], name="broken")
    assert fingerprint(session) != before


@pytest.mark.parametrize("exc", [RuntimeError("deep"), KeyboardInterrupt(), QloraError("x")])
def test_rollback_undoes_any_failure(session, exc):
    import peft

    before = fingerprint(session)
    with pytest.raises(type(exc)):
        with rolled_back_on_error(session):
            session.model.add_adapter("extra", peft.LoraConfig(r=2, target_modules=["q_proj"]))
            session.model.set_adapter("extra")
            session.adapters["extra"] = {"source": "test"}
            for p in session.model.parameters():
                if p.is_floating_point():
                    p.requires_grad_(True)
            session.model.eval()
            raise exc
    assert fingerprint(session) == before


def test_failed_train_and_compare_roll_back(session, tmp_path):
    before = fingerprint(session)
    with pytest.raises(QloraError):
        session.train(data=[{"prompt": "a", "completion": 1}], max_steps=1, output_dir=str(tmp_path / "r"))
    with pytest.raises(QloraError):
        session.compare("hi", adapters=["nope"])
    with pytest.raises(QloraError):
        session.generate("x" * 600)
    with pytest.raises(QloraError):
        session.stream("hi", columns=["nope"])
    assert fingerprint(session) == before


# --------------------------------------------------------------- class 9: Python twins, one paragraph
TWINS = [
    ("save-None", lambda s: s.save(None), ["directory must be a folder path, got None"]),
    ("save-int", lambda s: s.save(3), ["directory", "got a int"]),
    ("save-empty", lambda s: s.save(""), ["directory", "''"]),
    ("save-overwrite-text", lambda s: s.save("x", overwrite="yes"), ["overwrite must be True or False"]),
    ("save-adapter-int", lambda s: s.save("x", adapter=1), ["adapter must be an adapter name"]),
    ("load_adapter-None", lambda s: s.load_adapter(None), ["directory must be an adapter folder path, got None"]),
    ("load_adapter-list", lambda s: s.load_adapter(["a"]), ["got a list"]),
    ("load_adapter-name", lambda s: s.load_adapter("x", name=5), ["name must be an adapter name"]),
    ("merge-None", lambda s: s.merge(None), ["directory must be a folder path"]),
    ("merge-dtype", lambda s: s.merge("x", dtype=None), ["dtype must be text"]),
    ("export-None", lambda s: s.export(None), ["directory must be a folder path"]),
    ("generate-None", lambda s: s.generate(None), ["prompt must be text, got None"]),
    ("generate-adapter", lambda s: s.generate("hi", adapter=3), ["adapter must be an adapter name"]),
    ("compare-None", lambda s: s.compare(None), ["prompts must be a str or a list of str"]),
    ("stream-None", lambda s: s.stream(None), ["prompt must be text, got None"]),
    ("set_adapter-None", lambda s: s.set_adapter(None), ["no adapter named None"]),
    ("train-None", lambda s: s.train(None), ["no data given"]),
]


@pytest.mark.parametrize("case,call,expect", TWINS, ids=[t[0] for t in TWINS])
def test_python_twins_raise_one_paragraph(session, tmp_path, monkeypatch, case, call, expect):
    monkeypatch.chdir(tmp_path)
    before = fingerprint(session)
    with pytest.raises(QloraError) as info:
        call(session)
    text = str(info.value)
    assert "\n" not in text and len(text) < 400 and "Traceback" not in text
    for e in expect:
        assert e in text, (e, text)
    assert fingerprint(session) == before
    assert list(tmp_path.iterdir()) == []


def test_twin_errors_match_the_magic_in_a_shell(session, tmp_path):
    from IPython.testing import globalipapp
    from test_bad_input import check_one_paragraph, run_cell

    ip = globalipapp.start_ipython() or globalipapp.get_ipython()
    ip.run_line_magic("load_ext", "qlora_nb")
    ip.user_ns["qlora"] = session
    try:
        for cell, expect in [("qlora.save(None)", ["directory must be a folder path"]),
                             ("qlora.load_adapter(None)", ["directory must be an adapter folder path"])]:
            result, out = run_cell(ip, cell)
            assert isinstance(result.error_in_exec, QloraError), out
            check_one_paragraph(out, expect)
            assert len(out.strip().splitlines()) == 1
    finally:
        ip.run_line_magic("unload_ext", "qlora_nb")
        ip.user_ns.pop("qlora", None)
