"""GGUF / Ollama exports: round trips at every type, the GGUF LoRA's layout, the Modelfile TEMPLATE, refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from adapter_helpers import perturb
from go_template import modelfile_parts, render

import qlora_nb
from qlora_nb.errors import QloraError

PROMPTS = ["Hello there, how are you?", "def add(a, b):", "3 + 4 ="]
TWO_TURNS = [{"role": "user", "content": "What is the capital of France?"},
             {"role": "assistant", "content": "Paris."},
             {"role": "user", "content": "And of Italy? One word."}]


def _logits(model, tokenizer, prompts=PROMPTS):
    import torch

    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    model.eval()
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.float()
    return out[enc["attention_mask"].bool()]


def _reload(path: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)


@pytest.fixture(scope="module")
def trained(tiny_model_dir):
    s = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0, compute_dtype="float32")
    perturb(s, None, std=0.05, seed=1)
    return s


# Independent bars (max |Δlogit| after reloading with plain transformers; tiny model logits are about 1.4).
@pytest.mark.parametrize("outtype,bar", [("f32", 1e-4), ("f16", 2e-3), ("bf16", 1e-2), ("q8_0", 5e-2)])
def test_tiny_llama_round_trips_at_every_outtype(trained, tmp_path, outtype, bar):
    from gguf import GGUFReader

    result = trained.merge(tmp_path / "g", format="gguf", outtype=outtype, verbose=False, probes=PROMPTS)
    assert result.verified and result.template_match and result.eos_match and result.tokens_match
    assert result.file.is_file() and result.file.suffix == ".gguf" and result.file.parent == tmp_path / "g"
    types = {t.name: t.tensor_type.name for t in GGUFReader(str(result.file)).tensors}
    expect = {"f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0"}[outtype]
    assert types["blk.0.attn_q.weight"] == expect and types["blk.0.attn_norm.weight"] == "F32"
    merged, session = _logits(_reload(result.file), trained.tokenizer), _logits(trained.model, trained.tokenizer)
    diff = (merged - session).abs().max().item()
    assert diff < bar, diff
    assert abs(diff - result.max_abs_diff) < 1e-5  # the verdict reports what a user of the file sees
    if outtype == "q8_0":
        assert result.top1_agreement >= 0.9 and "top-1 agreement" in result.verdict()
    assert result.verdict().startswith("GGUF verified:") and "chat template ✓" in result.verdict()


def test_a_wrong_rotary_permutation_is_caught_and_nothing_is_kept(tmp_path, monkeypatch):
    from conftest import build_tiny_model_dir

    import qlora_nb.engine.export.gguf_write as gw

    # Large weights make attention sharp, so rotary positions matter (at init scale 0.02 attention is near uniform).
    build_tiny_model_dir(tmp_path / "sharp", initializer_range=0.5)
    s = qlora_nb.load(str(tmp_path / "sharp"), r=4, alpha=8, dropout=0.0, compute_dtype="float32")
    perturb(s, None, std=0.05, seed=1)
    good = s.merge(tmp_path / "ok", format="gguf", outtype="f32", verbose=False)
    assert good.max_abs_diff < 1e-3
    monkeypatch.setattr(gw, "row_order", lambda *a: None)  # the classic bug: q/k written in Hugging Face order
    with pytest.raises(QloraError, match=r"GGUF verification FAILED: .*sharp-f32\.gguf: max \|Δlogit\| [\d.]+ ") as err:
        s.merge(tmp_path / "g", format="gguf", outtype="f32", verbose=False)
    assert float(re.search(r"max \|Δlogit\| ([\d.]+)", str(err.value)).group(1)) > 0.1  # far above the 1e-2 bar
    assert not (tmp_path / "g").exists() and not list((tmp_path).glob("g*/*.gguf"))


def test_qwen2_round_trips(tmp_path):
    import torch
    from conftest import TINY, build_tokenizer
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **TINY)
    Qwen2ForCausalLM(cfg).save_pretrained(str(tmp_path / "qwen"))
    tok.save_pretrained(str(tmp_path / "qwen"))
    s = qlora_nb.load(str(tmp_path / "qwen"), r=4, alpha=8, dropout=0.0, compute_dtype="float32")
    perturb(s, None, std=0.05, seed=1)
    result = s.merge(tmp_path / "g", format="gguf", outtype="f32", verbose=False)
    assert result.verified and result.max_abs_diff < 1e-4


def test_gguf_lora_metadata_and_tensor_names(trained, tmp_path):
    import numpy as np
    import torch
    from gguf import GGUFReader

    folder = trained.save(tmp_path / "lora", format="gguf")
    files = list(folder.glob("*.gguf"))
    assert [f.name for f in files] == ["default-lora.gguf"]
    reader = GGUFReader(str(files[0]))
    fields = {k: f.contents() for k, f in reader.fields.items()}
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["general.architecture"] == "llama"
    assert fields["adapter.lora.alpha"] == pytest.approx(8.0)  # alpha/r = 8/4 = peft's scaling 2
    assert fields["general.base_model.count"] == 1 and fields["general.base_model.0.name"]
    tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    modules = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    assert set(tensors) == {f"blk.{i}.{m}.weight.lora_{ab}" for i in range(2) for m in modules for ab in "ab"}
    layer = trained.model.get_base_model().model.layers[0].self_attn
    for proj, key, heads in ((layer.q_proj, "attn_q", 4), (layer.k_proj, "attn_k", 2), (layer.v_proj, "attn_v", 0)):
        a, b = tensors[f"blk.0.{key}.weight.lora_a"], tensors[f"blk.0.{key}.weight.lora_b"]
        assert a.shape == (4, 64) and b.shape[1] == 4
        if heads:  # B's rows in llama.cpp's rotary order: undo it as transformers does and compare the update
            half = b.shape[0] // heads // 2
            b = b.reshape(heads, half, 2, 4).swapaxes(1, 2).reshape(b.shape)
        delta = torch.from_numpy(b @ a) * 2.0
        assert torch.allclose(delta, proj.get_delta_weight("default").float(), atol=1e-6)


def test_gguf_lora_refuses_trained_embeddings_and_says_merge(tiny_model_dir, tmp_path):
    s = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0, targets="q_proj,lm_head")
    perturb(s, None, std=0.05, seed=1)
    with pytest.raises(QloraError, match=r"trains lm_head, which a GGUF LoRA cannot hold.*--format gguf"):
        s.save(tmp_path / "lora", format="gguf")
    assert not (tmp_path / "lora").exists()


def test_modelfile_template_renders_like_the_tiny_chat_template(trained, tmp_path):
    result = trained.merge(tmp_path / "o", format="ollama", outtype="q8_0", verbose=False)
    parts = modelfile_parts(result.modelfile.read_text(encoding="utf-8"))
    assert parts["FROM"] == f"./{result.file.name}"
    assert 'stop "<|im_end|>"' in parts["PARAMETER"]
    assert "SYSTEM" not in parts  # this template adds no system message of its own
    for convo in (TWO_TURNS, [{"role": "system", "content": "Be brief."}, *TWO_TURNS]):
        expected = trained.tokenizer.apply_chat_template(convo, tokenize=False, add_generation_prompt=True)
        assert render(parts["TEMPLATE"], convo) == expected
    stem = result.file.stem
    assert result.ollama_commands() == [f"ollama create {stem} -f {result.modelfile}", f"ollama run {stem}"]


@pytest.mark.integration
def test_modelfile_template_renders_like_the_demo_tokenizer():
    """The demo's template inserts its own system prompt: it becomes SYSTEM, which Ollama puts first."""
    from conftest import demo_model_available
    from transformers import AutoTokenizer

    from qlora_nb.engine.export.ollama import modelfile_text
    from qlora_nb.engine.model.models import cache_dir

    if not demo_model_available():
        pytest.skip("demo model not in the cache")
    tok = AutoTokenizer.from_pretrained(str(cache_dir() / "models" / "smollm2-135m"))
    parts = modelfile_parts(modelfile_text(tok, "m.gguf", num_ctx=8192))
    assert parts["SYSTEM"].startswith("You are a helpful AI assistant named SmolLM")
    assert "num_ctx 8192" in parts["PARAMETER"]
    for convo in (TWO_TURNS, [{"role": "system", "content": "Answer in French."}, *TWO_TURNS]):
        expected = tok.apply_chat_template(convo, tokenize=False, add_generation_prompt=True)
        assert render(parts["TEMPLATE"], convo, system=parts["SYSTEM"]) == expected


# ------------------------------------------------------------------ bad input
def test_untrained_adapter_is_refused(tiny_session, tmp_path):
    with pytest.raises(QloraError, match="untrained"):
        tiny_session.merge(tmp_path / "g", format="gguf")
    with pytest.raises(QloraError, match="untrained"):
        tiny_session.save(tmp_path / "l", format="gguf")
    assert not list(tmp_path.iterdir())


def test_unsupported_architecture_names_the_supported_list():
    from transformers import GPT2Config

    from qlora_nb.engine.export.gguf_arch import arch_of

    with pytest.raises(QloraError, match=r"'gpt2' architecture.*Llama family.*Qwen2/Qwen3"):
        arch_of(GPT2Config())


@pytest.mark.parametrize("outtype,match", [("q4_k_m", "llama-quantize"), ("int3", "Accepted: q8_0")])
def test_outtypes_the_package_cannot_write_are_refused_before_any_work(trained, tmp_path, outtype, match):
    with pytest.raises(QloraError, match=match):
        trained.merge(tmp_path / "g", format="gguf", outtype=outtype)
    assert not (tmp_path / "g").exists()


def test_dir_that_is_a_file_or_holds_user_files_is_refused(trained, tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    with pytest.raises(QloraError, match="is a file"):
        trained.merge(f, format="gguf")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "todo.txt").write_text("keep")
    with pytest.raises(QloraError, match="holds files qlora_nb did not write"):
        trained.merge(tmp_path / "d", format="gguf", overwrite=True)
    assert f.read_text() == "mine" and (tmp_path / "d" / "todo.txt").read_text() == "keep"


def test_not_enough_disk_states_the_expected_size(trained, tmp_path):
    from qlora_nb.engine.export.gguf_export import export_gguf

    with pytest.raises(QloraError, match=r"needs about [\d.]+ MiB of disk but .* has 0\.0 MiB free"):
        export_gguf(trained, tmp_path / "g", disk_free=0, verbose=False)
    assert not (tmp_path / "g").exists()


def test_interrupt_during_the_write_leaves_no_gguf(trained, tmp_path, monkeypatch):
    import qlora_nb.engine.export.gguf_write as gw

    calls = {"n": 0}
    real = gw.convert_chunk

    def interrupted(rows, qtype):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(rows, qtype)

    monkeypatch.setattr(gw, "convert_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trained.merge(tmp_path / "g", format="gguf", verbose=False)
    assert not list(tmp_path.glob("**/*.gguf")) and not list(tmp_path.iterdir())


def test_magics_merge_ollama_and_save_gguf(trained, tmp_path, capsys):
    from IPython.testing.globalipapp import get_ipython

    ip = get_ipython()
    ip.run_line_magic("load_ext", "qlora_nb")
    ip.user_ns["qlora"] = trained
    try:
        ip.run_line_magic("qlora_merge", f"{tmp_path / 'o'} --format ollama --outtype f16 -o res")
        out = capsys.readouterr().out
        stem = ip.user_ns["res"].file.stem
        assert stem.endswith("-f16") and re.search(rf"^GGUF verified: {stem}\.gguf \(f16\)", out, re.M)
        assert f"ollama create {stem} -f {tmp_path / 'o' / 'Modelfile'}" in out and f"ollama run {stem}" in out
        assert ip.user_ns["res"].outtype == "f16"
        ip.run_line_magic("qlora_save", f"{tmp_path / 'l'} --format gguf")
        assert "GGUF LoRA" in capsys.readouterr().out and (tmp_path / "l" / "default-lora.gguf").is_file()
        with pytest.raises(QloraError, match=r"\(--outtype\): outtype applies to GGUF exports only"):
            ip.run_line_magic("qlora_merge", f"{tmp_path / 'x'} --outtype q8_0")
    finally:
        ip.run_line_magic("unload_ext", "qlora_nb")
        for k in ("qlora", "res"):
            ip.user_ns.pop(k, None)
    marker = json.loads((tmp_path / "o" / "written_by_qlora_nb.json").read_text())
    assert marker["kind"] == "GGUF export"


@pytest.mark.integration
@pytest.mark.slow
def test_demo_q8_0_export_keeps_held_out_exact_match(demo_trained, tmp_path):
    """The demo task trained (conftest's demo_trained), exported q8_0, reloaded with transformers: exact match
    within one row of the session's."""
    from types import SimpleNamespace

    from qlora_nb.cli import exact_match

    session, adapted = demo_trained.session, demo_trained.after
    result = session.merge(tmp_path / "g", format="gguf", outtype="q8_0", verbose=False)
    assert result.verified
    exported = exact_match(SimpleNamespace(model=_reload(result.file), tokenizer=session.tokenizer, device="cpu"),
                           n=8)
    assert adapted.hits >= 4 and abs(exported.hits - adapted.hits) <= 1, (adapted, exported)
