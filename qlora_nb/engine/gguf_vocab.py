"""The tokenizer as GGUF metadata: vocabulary, merges, special ids, chat template.

"The exported model talks gibberish" is most often a chat template or EOS id
that did not travel with the weights, so everything the notebook's tokenizer
uses is written from the tokenizer object itself (not from files on disk that
may differ): the byte-level BPE vocabulary and merges (``tokenizer.ggml.model =
gpt2``, what Llama 3, SmolLM and Qwen use), the token types (special tokens as
CONTROL so llama.cpp never splits them), the bos/eos/pad/unk ids and the chat
template. ``tokenizer.ggml.pre`` names the pre-tokenizer regex llama.cpp should
use, read off the tokenizer's own pre-tokenizer.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import QloraError

# Token types (llama.cpp's llama_token_type): 1 normal, 3 control, 4 user-defined, 5 unused.
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5
_LLAMA3_SPLIT = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
_QWEN2_SPLIT = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?"


def _pre_name(pre: dict[str, Any] | None) -> str:
    """llama.cpp's pre-tokenizer name for a tokenizers pre-tokenizer (JSON), by its split regex."""
    parts = (pre or {}).get("pretokenizers") or ([pre] if pre else [])
    kinds = [p.get("type") for p in parts]
    for p in parts:
        pattern = (p.get("pattern") or {}).get("Regex") or ""
        if p.get("type") == "Split" and pattern.startswith(_LLAMA3_SPLIT):
            return "llama-bpe"
        if p.get("type") == "Split" and pattern.startswith(_QWEN2_SPLIT):
            return "qwen2"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits"):
        return "smollm"
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    raise QloraError(f"the tokenizer's pre-tokenizer ({' + '.join(map(str, kinds)) or 'none'}) is not one this GGUF "
                     "export can name for llama.cpp.", where="tokenizer",
                     hint="Supported: byte-level BPE tokenizers as used by Llama 3, SmolLM and Qwen2/3. Merge to a "
                          "Hugging Face folder instead and convert it with llama.cpp's convert_hf_to_gguf.py.")


def tokenizer_fields(tokenizer, vocab_size: int) -> dict[str, Any]:
    """Everything :func:`write_tokenizer` writes, as plain values (also used by the Modelfile and the checks)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise QloraError(f"the tokenizer ({type(tokenizer).__name__}) is not a fast (tokenizers) tokenizer, so its "
                         "vocabulary cannot be written to GGUF.", where="tokenizer",
                         hint="Load the model with its tokenizer.json, or merge to a Hugging Face folder instead.")
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    byte_level = (spec.get("decoder") or {}).get("type") == "ByteLevel"
    if model.get("type") != "BPE" or not byte_level or model.get("byte_fallback"):
        raise QloraError(f"the tokenizer is {model.get('type')} without a byte-level decoder (a sentencepiece-style "
                         "vocabulary); this GGUF export writes byte-level BPE tokenizers only.", where="tokenizer",
                         hint="Supported: Llama 3, SmolLM/SmolLM2, Qwen2/3 tokenizers. Merge to a Hugging Face folder "
                              "instead and convert it with llama.cpp's convert_hf_to_gguf.py.")
    vocab = tokenizer.get_vocab()
    size = max(vocab_size, max(vocab.values()) + 1)
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [UNUSED] * size
    for tok, i in vocab.items():
        tokens[i], types[i] = tok, NORMAL
    added = {t.content: t.special for t in getattr(tokenizer, "added_tokens_decoder", {}).values()}
    for tok, special in added.items():
        if tok in vocab:
            types[vocab[tok]] = CONTROL if special else USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    probe = tokenizer("a")["input_ids"]
    return {
        "tokens": tokens, "types": types, "merges": merges, "pre": _pre_name(spec.get("pre_tokenizer")),
        "bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id,
        "unk": tokenizer.unk_token_id, "chat_template": tokenizer.chat_template if isinstance(
            tokenizer.chat_template, str) else None,
        "add_bos": bool(probe) and probe[0] == tokenizer.bos_token_id,
        "add_eos": bool(probe) and probe[-1] == tokenizer.eos_token_id and len(probe) > 1,
    }


def write_tokenizer(writer, fields: dict[str, Any]) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(fields["pre"])
    writer.add_token_list(fields["tokens"])
    writer.add_token_types(fields["types"])
    if fields["merges"]:
        writer.add_token_merges(fields["merges"])
    else:  # a vocabulary without merges (every token one byte): readers rebuild merges from scores
        writer.add_token_scores([0.0] * len(fields["tokens"]))
    for key, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                     ("pad", writer.add_pad_token_id), ("unk", writer.add_unk_token_id)):
        if fields[key] is not None:
            add(int(fields[key]))
    writer.add_add_bos_token(fields["add_bos"])
    writer.add_add_eos_token(fields["add_eos"])
    if fields["chat_template"]:
        writer.add_chat_template(fields["chat_template"])
