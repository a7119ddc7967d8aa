"""An exported GGUF as one more column (``--gguf FILE``): it answers like the adapter, on every generation path."""

from __future__ import annotations

import pytest
from adapter_helpers import gguf_export_of_a_changed_adapter

import qlora_nb
from qlora_nb.errors import QloraError

PROMPTS = ["Hello there, how are you?", "def add(a, b):"]


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    s, file = gguf_export_of_a_changed_adapter(tiny_model_dir, tmp_path_factory.mktemp("g"))
    yield s, file
    s.detach_gguf()


def _state(s):
    return (list(s.adapters), s.model.active_adapter, sorted(n for n, p in s.model.named_parameters()
                                                              if p.requires_grad), s.model.training)


def test_compare_shows_the_gguf_answering_like_the_adapter(exported):
    s, file = exported
    before = _state(s)
    r = s.compare(PROMPTS, gguf=str(file), max_new_tokens=12)
    assert r.columns == ["base", "default", "gguf"]
    assert any(f"column 'gguf': {file}" in n and "MiB in memory" in n for n in r.notes)
    for record in r:
        cells = record["columns"]
        assert cells["gguf"]["ids"] == cells["default"]["ids"] and cells["gguf"]["ids"]
    assert any(rec["columns"]["default"]["ids"] != rec["columns"]["base"]["ids"] for rec in r)
    assert _state(s) == before and list(s.attached) == ["gguf"]
    assert "gguf" in r.text()
    # once attached it is shown when no column is named, and left out when others are named
    assert s.compare(PROMPTS[:1], max_new_tokens=4).columns == ["base", "default", "gguf"]
    assert s.compare(PROMPTS[:1], max_new_tokens=4, adapters=["default"]).columns == ["base", "default"]
    assert s.generate(PROMPTS[0], adapter="gguf", max_new_tokens=8) == s.generate(PROMPTS[0], max_new_tokens=8)


def test_stream_fills_the_gguf_column_with_the_others_and_chat_answers_from_it(exported):
    s, file = exported
    order = []
    result = s.stream(PROMPTS[0], gguf=str(file), max_new_tokens=6,
                      on_event=lambda e: order.append(e["column"]) if e["kind"] == "stream_token" else None)
    assert result.columns == ["base", "default", "gguf"]
    assert order[:3] == ["base", "default", "gguf"]  # lockstep: one token each in turn
    assert result.cells["gguf"]["ids"] == result.cells["default"]["ids"]
    reply = s.chat([{"role": "user", "content": "Hi!"}], max_new_tokens=6)
    assert set(reply.replies) == {"base", "default", "gguf"} and reply.replies["gguf"] == reply.replies["default"]


def test_attaching_the_same_file_again_reuses_it_and_unload_frees_it(tiny_model_dir, exported):
    _, file = exported
    s = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0, compute_dtype="float32")
    first = s.attach_gguf(file)
    assert s.attach_gguf(file.parent) is first  # a folder holding one .gguf names it too
    assert s.unload() >= first.nbytes and s.attached == {}


def test_bad_files_are_one_paragraph_naming_the_flag(exported, tmp_path):
    s, file = exported
    with pytest.raises(QloraError, match=r"^--gguf: no file at .*missing\.gguf.*%qlora_merge DIR --format gguf"):
        s.compare(PROMPTS[:1], gguf=str(tmp_path / "missing.gguf"))
    (tmp_path / "notes.gguf").write_text("not a model")
    with pytest.raises(QloraError, match=r"^--gguf: .*notes\.gguf is not a GGUF file"):
        s.compare(PROMPTS[:1], gguf=str(tmp_path / "notes.gguf"))
    (tmp_path / "two").mkdir()
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / "two" / name).write_bytes(b"GGUF")
    with pytest.raises(QloraError, match=r"holds 2 \.gguf files.*Pass the \.gguf file itself"):
        s.stream(PROMPTS[0], gguf=str(tmp_path / "two"))


def test_a_gguf_of_another_vocabulary_is_refused(exported, tmp_path):
    from test_gguf_spm import _model_dir, _trained

    other = _trained(_model_dir(tmp_path / "spm", "llama")).merge(tmp_path / "o", format="gguf", outtype="f32",
                                                                  verbose=False)
    s, _ = exported
    with pytest.raises(QloraError, match=r"tokenizer splits text differently.*exported from this session"):
        s.attach_gguf(other.file)


def test_magics_take_gguf(exported, capsys):
    from IPython.testing.globalipapp import get_ipython

    s, file = exported
    ip = get_ipython()
    ip.run_line_magic("load_ext", "qlora_nb")
    ip.user_ns["qlora"] = s
    try:
        ip.user_ns.update(gguf_file=file, n=4, prompts=["Hello there", "Hi"])
        ip.run_line_magic("qlora_compare", '$prompts --gguf $gguf_file --max-new-tokens $n -o cmp')
        assert ip.user_ns["cmp"].columns == ["base", "default", "gguf"] and len(ip.user_ns["cmp"]) == 2
        assert all(len(r["columns"]["gguf"]["ids"]) <= 4 for r in ip.user_ns["cmp"])
        ip.run_line_magic("qlora_compare", f'"Hello there" --gguf {file} --sample -o cmp --force')
        assert ip.user_ns["cmp"].columns == ["base", "default", "gguf"]
        ip.run_line_magic("qlora_playground", "--gguf $gguf_file -o pg")
        assert "gguf" in ip.user_ns["pg"].available
    finally:
        ip.run_line_magic("unload_ext", "qlora_nb")
        for k in ("qlora", "cmp", "pg", "gguf_file", "n", "prompts"):
            ip.user_ns.pop(k, None)
    assert "column 'gguf'" in capsys.readouterr().out
