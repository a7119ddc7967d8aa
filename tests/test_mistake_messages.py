"""Issue 15, class 7: user mistakes get a message naming the path or value, never "this looks like a bug"."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

import qlora_nb
from qlora_nb.errors import QloraError

BUG = "looks like a bug"


def _copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _truncated_weights(tiny: Path, root: Path) -> Path:
    d = _copy_model(tiny, root / "truncated")
    w = d / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) * 2 // 3])
    return d


def _garbage_header(tiny: Path, root: Path) -> Path:
    d = _copy_model(tiny, root / "garbage")
    (d / "model.safetensors").write_bytes(struct.pack("<Q", 50) + b"{not json at all" + b"\0" * 40)
    return d


def _header_cut(tiny: Path, root: Path) -> Path:
    d = _copy_model(tiny, root / "header-cut")
    (d / "model.safetensors").write_bytes(struct.pack("<Q", 10_000) + b'{"a": ')
    return d


def _fake_gguf(tiny: Path, root: Path) -> Path:
    p = root / "cut.gguf"
    p.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 5, 2) + b"\x01\x02")
    return p


def _not_gguf(tiny: Path, root: Path) -> Path:
    p = root / "model.gguf"
    p.write_text("this is a text file named .gguf")
    return p


def _real_gguf_cut(tiny: Path, root: Path) -> Path:
    from qlora_nb.engine.model.models import cache_dir

    src = next(iter((cache_dir() / "downloads").glob("*.gguf")), None)
    if src is None:
        pytest.skip("the demo GGUF is not in the cache")
    p = root / "demo-cut.gguf"
    with open(src, "rb") as fh:
        p.write_bytes(fh.read(20_000_000))
    return p


def _encoder_only(tiny: Path, root: Path) -> Path:
    from conftest import build_tokenizer
    from transformers import BertConfig, BertForMaskedLM

    d = root / "bert"
    tok = build_tokenizer()
    BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d


def _encoder_decoder(tiny: Path, root: Path) -> Path:
    from conftest import build_tokenizer
    from transformers import T5Config

    d = root / "t5"
    d.mkdir()
    cfg = T5Config(vocab_size=300, d_model=32, d_ff=64, num_layers=1, num_heads=2)
    cfg.architectures = ["T5ForConditionalGeneration"]
    cfg.save_pretrained(str(d))
    build_tokenizer().save_pretrained(str(d))
    return d


MODELS = [
    ("truncated-safetensors", _truncated_weights, ["model.safetensors is truncated", "bytes"]),
    ("garbage-header", _garbage_header, ["not a readable safetensors file"]),
    ("header-cut", _header_cut, ["not a readable safetensors file", "cut off"]),
    ("fake-gguf", _fake_gguf, ["cut.gguf is truncated or damaged"]),
    ("not-gguf", _not_gguf, ["is not a GGUF file"]),
    ("demo-gguf-cut", _real_gguf_cut, ["demo-cut.gguf is truncated or damaged"]),
    ("encoder-only", _encoder_only, ["'bert'", "BertForMaskedLM", "encoder-only", "decoder (causal)"]),
    ("encoder-decoder", _encoder_decoder, ["'t5'", "encoder-decoder"]),
]


@pytest.mark.parametrize("case,make,expect", MODELS, ids=[m[0] for m in MODELS])
def test_model_mistakes_are_named(tiny_model_dir, tmp_path, monkeypatch, case, make, expect):
    from qlora_nb.engine.model import models

    if "demo" not in case:  # conversions of the test's GGUF files go to a throwaway cache
        monkeypatch.setattr(models, "cache_dir", lambda: tmp_path / "cache")
    path = make(tiny_model_dir, tmp_path)
    with pytest.raises(QloraError) as info:
        qlora_nb.load(str(path))
    text = str(info.value)
    assert BUG not in text
    for e in expect:
        assert e in text, (e, text)


def test_a_torn_adapter_file_is_named(tiny_session, tmp_path):
    out = tiny_session.save(tmp_path / "ad")
    w = out / "adapter_model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(QloraError, match="adapter_model.safetensors is truncated") as info:
        tiny_session.load_adapter(out, name="torn")
    assert BUG not in str(info.value)


def test_unwritable_output_dir_is_named(tiny_session, tmp_path, monkeypatch):
    from qlora_nb import overwrite

    monkeypatch.setattr(overwrite.os, "access", lambda *a, **k: False)
    for call in (lambda: tiny_session.train(data=[{"prompt": "a", "completion": "b"}] * 2, max_steps=1,
                                            output_dir=str(tmp_path / "run"), val_split=0),
                 lambda: tiny_session.save(tmp_path / "ad")):
        with pytest.raises(QloraError, match="is not writable by this kernel's user") as info:
            call()
        assert BUG not in str(info.value) and str(tmp_path) in str(info.value)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- in a shell
@pytest.fixture(scope="module")
def shell(tmp_path_factory, tiny_model_dir):
    from IPython.testing import globalipapp

    tmp = tmp_path_factory.mktemp("messages")
    ip = globalipapp.start_ipython() or globalipapp.get_ipython()
    ip.run_line_magic("load_ext", "qlora_nb")
    ip.user_ns["qlora"] = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0)
    (tmp / "data.jsonl").write_text('{"prompt": "a", "completion": "b"}\n' * 4)
    (tmp / "a_file.txt").write_text("keep me")
    yield ip, tmp
    ip.run_line_magic("unload_ext", "qlora_nb")
    ip.user_ns.pop("qlora", None)


SHELL = [
    ("%qlora_save .", ["'.' is the notebook's current folder", "adapters/my-run"]),
    ("%qlora_save . --overwrite", ["notebook's current folder"]),
    ("%qlora_save ..", ["contains the notebook's folder"]),
    ("%qlora_save a_file.txt --overwrite", ["'a_file.txt' is a file", "never replaced"]),
    ("%qlora_export . --data data.jsonl", ["notebook's current folder"]),
    ("%%qlora_train\ndata: data.jsonl\noutput_dir: a_file.txt\nmax_steps: 1",
     ["train option 'output_dir'", "'a_file.txt' is a file"]),
    ("%%qlora_train\ndata: data.jsonl\noutput_dir: .\nmax_steps: 1\noverwrite: true",
     ["output_dir", "notebook's current folder"]),
]


@pytest.mark.parametrize("cell,expect", SHELL, ids=[c.replace("\n", " ") for c, _ in SHELL])
def test_magic_mistakes_are_one_specific_paragraph(shell, monkeypatch, cell, expect):
    from test_bad_input import check_one_paragraph, run_cell

    ip, tmp = shell
    monkeypatch.chdir(tmp)
    before = sorted(p.name for p in tmp.iterdir())
    result, out = run_cell(ip, cell)
    assert isinstance(result.error_in_exec, QloraError), out
    text = check_one_paragraph(out, expect)
    assert BUG not in text
    assert sorted(p.name for p in tmp.iterdir()) == before
    assert (tmp / "a_file.txt").read_text() == "keep me"
