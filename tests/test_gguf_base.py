"""``merge(DIR, format="gguf", base_only=True)``: the base as the session holds it, for a GGUF LoRA; its refusals."""

from __future__ import annotations

import re

import pytest
from adapter_helpers import perturb

import qlora_nb
from qlora_nb.errors import QloraError

PROMPTS = ["Hello there, how are you?", "def add(a, b):", "3 + 4 ="]


def _tensor(path, name):
    import numpy as np
    from gguf import GGUFReader

    found = {t.name: t for t in GGUFReader(str(path)).tensors}[name]
    return np.asarray(found.data).reshape(tuple(reversed([int(d) for d in found.shape])))


def _nf4_weight(session, path):
    from peft.utils.integrations import dequantize_bnb_weight

    layer = session.model.get_base_model().get_submodule(path)
    layer = getattr(layer, "base_layer", layer)
    return dequantize_bnb_weight(layer.weight).float().cpu().numpy()


def test_untrained_session_writes_its_nf4_base_verified(tiny_model_dir, tmp_path):
    import numpy as np
    from safetensors.torch import load_file

    tiny_session = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0, compute_dtype="float32")
    result = tiny_session.merge(tmp_path / "b", format="gguf", outtype="f32", base_only=True, verbose=False,
                                probes=PROMPTS)
    assert result.verified and result.base_only and result.tokens_match and result.template_match
    assert result.file.name.endswith("-base-f32.gguf") and result.max_abs_diff < 1e-3
    assert "vs the session's base (adapters off)" in result.verdict()
    assert "--lora ADAPTER-lora.gguf" in str(result) and "no adapter" in str(result)
    # v_proj has no rotary permutation: the file holds the session's dequantized NF4 weight, not the checkpoint's
    got = _tensor(result.file, "blk.0.attn_v.weight")
    nf4 = _nf4_weight(tiny_session, "model.layers.0.self_attn.v_proj")
    original = load_file(str(tiny_session.model_path / "model.safetensors"))["model.layers.0.self_attn.v_proj.weight"]
    assert np.array_equal(got, nf4) and not np.allclose(got, original.float().numpy(), atol=1e-6)
    assert not result.warnings


def test_base_of_a_trained_session_leaves_the_adapter_out(tiny_model_dir, tmp_path):
    s = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0, compute_dtype="float32")
    perturb(s, None, std=0.5, seed=1)
    base = s.merge(tmp_path / "b", format="gguf", outtype="f32", base_only=True, verbose=False, probes=PROMPTS)
    merged = s.merge(tmp_path / "m", format="gguf", outtype="f32", verbose=False, probes=PROMPTS)
    assert base.max_abs_diff < 1e-3 < merged.adapter_effect  # the base file is the session with adapters off
    assert base.adapter == "base" and merged.adapter == "default"
    assert not (_tensor(base.file, "blk.0.attn_v.weight") == _tensor(merged.file, "blk.0.attn_v.weight")).all()


def test_a_16_bit_session_says_the_file_is_the_checkpoint(tiny_model_dir, tmp_path):
    s = qlora_nb.load(str(tiny_model_dir), bits=16, r=4, alpha=8, dropout=0.0, compute_dtype="float32")
    result = s.merge(tmp_path / "b", format="gguf", outtype="f32", base_only=True, verbose=False, probes=PROMPTS)
    assert result.verified and len(result.warnings) == 1
    assert re.search(r"not quantized \(bits 16\).*checkpoint's own weights", result.warnings[0])
    assert "warning: this session's base is not quantized" in str(result)


def test_ollama_base_only_modelfile_names_where_the_adapter_goes(tiny_session, tmp_path):
    result = tiny_session.merge(tmp_path / "o", format="ollama", outtype="f16", base_only=True, verbose=False)
    text = result.modelfile.read_text()
    assert f"FROM ./{result.file.name}" in text and "# ADAPTER ./NAME-lora.gguf" in text
    assert "%qlora_save DIR --format gguf" in text


def test_the_gguf_lora_message_names_the_base_only_export(tiny_model_dir, tmp_path):
    from qlora_nb.engine.export.gguf_lora import lora_summary

    s = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0, compute_dtype="float32")
    perturb(s, None, std=0.05, seed=1)
    text = lora_summary(s.save(tmp_path / "l", format="gguf"), "default")
    assert "%qlora_merge BASEDIR --format gguf --base-only" in text and "base_only=True" in text


# ------------------------------------------------------------------ bad input
def test_base_only_refusals_name_the_option_and_write_nothing(tiny_session, tmp_path):
    with pytest.raises(QloraError, match=r"^--base-only: .*Hugging Face merge has no base-only form.*format='gguf'"):
        tiny_session.merge(tmp_path / "h", base_only=True)
    with pytest.raises(QloraError, match=r"^--base-only: .*adapter 'default' would be ignored"):
        tiny_session.merge(tmp_path / "a", format="gguf", base_only=True, adapter="default")
    with pytest.raises(QloraError, match=r"^base_only: .*must be True or False|^base_only: .*bool"):
        tiny_session.merge(tmp_path / "y", format="gguf", base_only="yes")
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    with pytest.raises(QloraError, match="is a file"):
        tiny_session.merge(f, format="gguf", base_only=True)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "todo.txt").write_text("keep")
    with pytest.raises(QloraError, match="holds files qlora_nb did not write"):
        tiny_session.merge(tmp_path / "d", format="gguf", base_only=True, overwrite=True)
    assert f.read_text() == "mine" and (tmp_path / "d" / "todo.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "notes.txt"]
    with pytest.raises(QloraError, match=r"untrained.*--base-only"):  # the plain merge points to the base export
        tiny_session.merge(tmp_path / "g", format="gguf")


def test_magic_base_only_and_its_bad_flags(tiny_session, tmp_path, capsys):
    from IPython.testing.globalipapp import get_ipython

    ip = get_ipython()
    ip.run_line_magic("load_ext", "qlora_nb")
    ip.user_ns["qlora"] = tiny_session
    try:
        ip.run_line_magic("qlora_merge", f"{tmp_path / 'b'} --format gguf --outtype f16 --base-only -o res")
        out = capsys.readouterr().out
        assert re.search(r"^GGUF verified: .*-base-f16\.gguf \(f16\) .*session's base", out, re.M)
        assert ip.user_ns["res"].base_only
        with pytest.raises(QloraError, match=r"^--base-only: base_only writes a GGUF base"):
            ip.run_line_magic("qlora_merge", f"{tmp_path / 'x'} --base-only")
        with pytest.raises(QloraError, match=r"^--base-only: .*adapter 'default' would be ignored"):
            ip.run_line_magic("qlora_merge", f"{tmp_path / 'x'} --format gguf --base-only --adapter default")
    finally:
        ip.run_line_magic("unload_ext", "qlora_nb")
        for k in ("qlora", "res"):
            ip.user_ns.pop(k, None)
    assert not (tmp_path / "x").exists()
