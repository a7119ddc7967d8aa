"""Attaching a GGUF checks its header first: a live session, complete metadata, the session's base, enough memory.

Every refusal happens before transformers is asked to build anything (``load_back`` is made to fail the test if
it is reached), and leaves the session as it was. The compare and chat results name the file's column as itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from adapter_helpers import gguf_export_of_a_changed_adapter, perturb
from conftest import TINY, build_tiny_model_dir

import qlora_nb
from qlora_nb.engine.export import gguf_check, gguf_header
from qlora_nb.errors import QloraError

VOCAB = 300  # the crafted files' token count (only the header is read, so it need not be the session's tokenizer)


def craft(path: Path, drop: tuple[str, ...] = (), *, arch: str = "llama", layers_with_tensors: int | None = None,
          embd: tuple[int, int] | None = None, kind: str | None = None, **dims) -> Path:
    """A GGUF whose header says what the test needs: the tiny model's dimensions, minus ``drop``, plus ``dims``."""
    import gguf
    import numpy as np

    values = {"context_length": TINY["max_position_embeddings"], "embedding_length": TINY["hidden_size"],
              "block_count": TINY["num_hidden_layers"], "feed_forward_length": TINY["intermediate_size"],
              "attention.head_count": TINY["num_attention_heads"],
              "attention.head_count_kv": TINY["num_key_value_heads"], "vocab_size": VOCAB, **dims}
    w = gguf.GGUFWriter(str(path), arch)
    if kind:
        w.add_string("general.type", kind)
    for key, value in values.items():
        if key not in drop:
            w.add_uint32(f"{arch}.{key}", value)
    if "tokens" not in drop:
        w.add_token_list([f"t{i}" for i in range(VOCAB)])
    if "tensors" not in drop:
        rows, hidden = embd or (values["vocab_size"], values["embedding_length"])
        w.add_tensor("token_embd.weight", np.zeros((rows, hidden), dtype=np.float32))
        for i in range(values["block_count"] if layers_with_tensors is None else layers_with_tensors):
            w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(values["embedding_length"], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


class _Config:  # the tiny model's config, as check_matches reads it
    model_type = "llama"
    vocab_size = VOCAB
    hidden_size, intermediate_size = TINY["hidden_size"], TINY["intermediate_size"]
    num_hidden_layers, num_attention_heads = TINY["num_hidden_layers"], TINY["num_attention_heads"]
    num_key_value_heads = TINY["num_key_value_heads"]


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("transformers was asked to load a file the header checks should have refused")

    monkeypatch.setattr(gguf_check, "load_back", refuse)


def test_a_well_formed_header_of_the_same_model_passes(tmp_path):
    header = gguf_header.check_before_loading(craft(tmp_path / "ok.gguf"), _Config())
    assert header.architecture == "llama" and header.n_vocab == VOCAB
    assert header.load_bytes == 4 * (VOCAB * TINY["hidden_size"] + 2 * TINY["hidden_size"])


@pytest.mark.parametrize(("drop", "extra", "message"), [
    (("embedding_length",), {}, r"incomplete metadata: llama\.embedding_length missing.*default-size model"),
    (("block_count", "feed_forward_length"), {}, r"llama\.block_count, llama\.feed_forward_length missing"),
    (("context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count",
      "attention.head_count_kv", "vocab_size"), {}, r"incomplete metadata: .*attention\.head_count missing.*27 GB"),
    (("tokens",), {}, r"tokenizer\.ggml\.tokens missing"),
    (("tensors",), {}, r"holds no tensors"),
    ((), {"kind": "adapter"}, r"is a LoRA adapter GGUF, not a model"),
    ((), {"embd": (VOCAB, 32)}, r"inconsistent: token_embd\.weight is 300 x 32 but the metadata says 300 tokens x 64"),
    ((), {"layers_with_tensors": 1}, r"inconsistent: tensors exist for 1 layers but llama\.block_count is 2"),
])
def test_incomplete_or_inconsistent_metadata_is_refused_before_loading(tmp_path, drop, extra, message):
    file = craft(tmp_path / "bad.gguf", drop, **extra)
    with pytest.raises(QloraError, match=message) as info:
        gguf_header.check_before_loading(file, _Config())
    assert str(info.value).startswith("--gguf: ") and "Nothing was loaded" in str(info.value)


@pytest.mark.parametrize(("dims", "named"), [
    ({"feed_forward_length": 96}, "intermediate_size 96 (the session's is 128)"),
    ({"block_count": 3}, "num_hidden_layers 3 (the session's is 2)"),
    ({"embedding_length": 32}, "hidden_size 32 (the session's is 64)"),
    ({"attention.head_count_kv": 4}, "num_key_value_heads 4 (the session's is 2)"),
    ({"vocab_size": 200}, "vocabulary 200 tokens (the session's is 300)"),
    ({"arch": "qwen2"}, "architecture 'qwen2' (the session's is 'llama')"),
])
def test_a_file_of_another_model_is_refused_naming_what_differs(tmp_path, dims, named):
    file = craft(tmp_path / "other.gguf", **dims)
    with pytest.raises(QloraError, match=r"is another model than this session's base") as info:
        gguf_header.check_before_loading(file, _Config())
    assert named in str(info.value) and "exported from this session" in str(info.value)


@pytest.mark.parametrize(("free", "refused"), [(10**12, False), (10**6, False), (80_000, True), (0, True)])
def test_the_memory_estimate_is_checked_against_what_is_free(tmp_path, free, refused):
    header = gguf_header.read_header(craft(tmp_path / "m.gguf"))  # ~77 KB in fp32
    if refused:
        with pytest.raises(QloraError, match=r"would take about \S+ \S+ to load back .* but only \S+ \S+ of memory is free"):
            gguf_header.check_memory(header, available=free)
    else:
        assert gguf_header.check_memory(header, available=free) == header.load_bytes


def test_a_truncated_file_is_named(tmp_path):
    file = craft(tmp_path / "t.gguf")
    file.write_bytes(file.read_bytes()[:200])
    with pytest.raises(QloraError, match=r"t\.gguf is truncated or damaged"):
        gguf_header.read_header(file)


# ------------------------------------------------------------------ on a real session
@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    s, file = gguf_export_of_a_changed_adapter(tiny_model_dir, tmp_path_factory.mktemp("g"))
    yield s, file
    s.unload()


def _state(s):
    return list(s.adapters), dict(getattr(s, "attached", {}) or {}), s.model.active_adapter


@pytest.mark.parametrize("overrides", [{"intermediate_size": 96}, {"num_hidden_layers": 3},
                                       {"num_key_value_heads": 4}])
def test_a_session_of_another_model_refuses_the_file(exported, tmp_path, no_loading, overrides):
    _, file = exported
    other = qlora_nb.load(str(build_tiny_model_dir(tmp_path / "b", seed=3, **overrides)), r=4, alpha=8,
                          compute_dtype="float32")
    before = _state(other)
    for call in (lambda: other.attach_gguf(file), lambda: other.compare(["Hi"], gguf=str(file)),
                 lambda: other.chat([{"role": "user", "content": "Hi"}], gguf=str(file))):
        with pytest.raises(QloraError, match=r"^--gguf: .* is another model than this session's base"):
            call()
    assert _state(other) == before


def test_an_unloaded_session_refuses_attach_before_reading_the_file(tiny_model_dir, exported, no_loading):
    _, file = exported
    s = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, compute_dtype="float32")
    s.unload()
    for call in (lambda: s.attach_gguf(file), lambda: s.attach_gguf("/no/such/file.gguf"),
                 lambda: s.compare(["Hi"], gguf=str(file))):
        with pytest.raises(QloraError, match=r"this session was unloaded"):
            call()
    assert not getattr(s, "attached", None)


def test_compare_and_chat_name_the_gguf_column_as_itself(tiny_model_dir, exported):
    _, file = exported
    s = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0, compute_dtype="float32")  # untrained adapter
    try:
        r = s.compare(["Hello there", "def add(a, b):"], gguf=str(file), max_new_tokens=8)
        assert r.columns == ["base", "gguf"]
        for record in r:
            assert record["adapter"] is None and record["adapted"] is None and record["diverge_at"] is None
            assert record["changed"] is False  # no adapter column: the file's difference is not the adapter's
            assert record["columns"]["gguf"]["source"] == "gguf" and record["columns"]["base"]["source"] == "base"
            assert record["gguf"] == record["columns"]["gguf"]["text"]
        assert "gguf (GGUF file): " in r.text()
        reply = s.chat({"role": "user", "content": "Hi!"}, max_new_tokens=4)
        assert reply.cells["gguf"]["source"] == "gguf" and "GGUF (GGUF FILE)" in reply.text()
        perturb(s, None, std=0.5, seed=1)  # now trained: the adapter column comes first, the file after it
        r = s.compare(["Hello there"], max_new_tokens=8)
        assert r.columns == ["base", "default", "gguf"] and r[0]["adapter"] == "default"
        assert r[0]["columns"]["default"]["source"] == "adapter"
    finally:
        s.unload()
