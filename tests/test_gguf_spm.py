"""GGUF export of sentencepiece-style vocabularies (Llama 2, Mistral v0.1-v0.3): round trip, types, merge order."""

from __future__ import annotations

import pytest
from adapter_helpers import perturb
from spm_tokenizer import TEXT, build_spm_tokenizer

import qlora_nb
from qlora_nb.errors import QloraError

PROMPTS = ["Hello there, how are you?", "Tell me about Rome ü!", "3 + 4 ="]


def _model_dir(path, model_type: str):
    import torch
    from conftest import TINY
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    tok = build_spm_tokenizer()
    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM),
                             "mistral": (MistralConfig, MistralForCausalLM)}[model_type]
    torch.manual_seed(0)
    cfg = config_cls(vocab_size=len(tok), tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
                     eos_token_id=tok.eos_token_id, **TINY)
    model_cls(cfg).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def _trained(path):
    s = qlora_nb.load(str(path), r=4, alpha=8, dropout=0.0, compute_dtype="float32")
    perturb(s, None, std=0.05, seed=1)
    return s


@pytest.fixture(scope="module")
def llama2(tmp_path_factory):
    return _trained(_model_dir(tmp_path_factory.mktemp("llama2"), "llama"))


@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_sentencepiece_llama_round_trips(llama2, tmp_path, outtype):
    from gguf import GGUFReader

    result = llama2.merge(tmp_path / "g", format="gguf", outtype=outtype, verbose=False, probes=PROMPTS)
    assert result.verified and result.tokens_match and result.template_match and result.eos_match
    if outtype == "f32":
        assert result.max_abs_diff < 1e-4
    reader = GGUFReader(str(result.file))
    model = reader.fields["tokenizer.ggml.model"]
    assert bytes(model.parts[model.data[0]]).decode() == "llama"
    types = reader.fields["tokenizer.ggml.token_type"]
    kinds = [int(types.parts[i][0]) for i in types.data]
    tok = llama2.tokenizer
    assert kinds[tok.unk_token_id] == 2 and kinds[tok.eos_token_id] == 3
    assert kinds[tok.convert_tokens_to_ids("<0x41>")] == 6 and kinds[tok.convert_tokens_to_ids("▁Hello")] == 1


def _llama_cpp_spm(text: str, tokens: list[str], scores: list[float]) -> list[int]:
    """llama.cpp's sentencepiece tokenizer in short: start from characters (bytes for unknown ones), then keep
    merging the adjacent pair whose joined text is a token with the highest score (leftmost on a tie)."""
    ids = {t: i for i, t in enumerate(tokens)}
    symbols = list("▁" + text.replace(" ", "▁"))
    while True:
        best = None
        for i in range(len(symbols) - 1):
            joined = symbols[i] + symbols[i + 1]
            if joined in ids and (best is None or scores[ids[joined]] > scores[ids[symbols[best] + symbols[best + 1]]]):
                best = i
        if best is None:
            break
        symbols[best:best + 2] = [symbols[best] + symbols[best + 1]]
    out = []
    for s in symbols:
        out.extend([ids[s]] if s in ids else [ids[f"<0x{b:02X}>"] for b in s.encode()])
    return out


def test_scores_make_llama_cpp_merge_in_the_tokenizer_s_order(llama2):
    from qlora_nb.engine.export.gguf_vocab import tokenizer_fields

    tok = llama2.tokenizer
    fields = tokenizer_fields(tok, len(tok))
    assert fields["model"] == "llama" and fields["merges"]
    mixed = ["Paris is the capital, ü 42!", "a brave toaster", "therefore the apital Parome storytaly", "adddd bbrave"]
    for text in [*TEXT, *mixed]:
        want = tok(text, add_special_tokens=False)["input_ids"]
        assert _llama_cpp_spm(text, fields["tokens"], fields["scores"]) == want, text
    flat = [0.0] * len(fields["tokens"])  # the same merges without the scores (gguf-py's LlamaHfVocab) split differently
    assert any(_llama_cpp_spm(t, fields["tokens"], flat) != tok(t, add_special_tokens=False)["input_ids"] for t in mixed)


def test_mistral_round_trips_and_its_inst_template_is_refused_for_ollama_only(tmp_path):
    s = _trained(_model_dir(tmp_path / "mistral", "mistral"))
    result = s.merge(tmp_path / "g", format="gguf", outtype="f32", verbose=False, probes=PROMPTS)
    assert result.verified and result.max_abs_diff < 1e-4 and result.template_match
    with pytest.raises(QloraError, match=r"Ollama TEMPLATE.*--format gguf"):
        s.merge(tmp_path / "o", format="ollama", outtype="f32", verbose=False)
    assert not list(tmp_path.glob("o/*.gguf"))


def test_a_vocabulary_of_another_kind_is_refused_naming_both_kinds():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from qlora_nb.engine.export.gguf_vocab import tokenizer_fields

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]")))
    with pytest.raises(QloraError, match=r"WordPiece.*byte-level BPE.*sentencepiece-style.*Llama 2, Mistral"):
        tokenizer_fields(tok, 2)


def test_a_llama2_adapter_saves_as_a_gguf_lora(llama2, tmp_path):
    from gguf import GGUFReader

    path = llama2.save(tmp_path / "lora", format="gguf")
    file = path if str(path).endswith(".gguf") else next((tmp_path / "lora").glob("*.gguf"))
    reader = GGUFReader(str(file))
    kind = reader.fields["general.type"]
    assert bytes(kind.parts[kind.data[0]]).decode() == "adapter"
    names = {t.name for t in reader.tensors}
    assert "blk.0.attn_q.weight.lora_a" in names and "blk.0.attn_q.weight.lora_b" in names
