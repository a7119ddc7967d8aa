"""The tokenizer as GGUF metadata: vocabulary, merges, special ids, chat template.

"The exported model talks gibberish" is most often a chat template or EOS id
that did not travel with the weights, so everything the notebook's tokenizer
uses is written from the tokenizer object itself (not from files on disk that
may differ): the vocabulary and merges, the token types (special tokens as
CONTROL so llama.cpp never splits them), the bos/eos/pad/unk ids and the chat
template. Two vocabulary kinds are written:

* byte-level BPE (``tokenizer.ggml.model = gpt2``: Llama 3, SmolLM, Qwen);
  ``tokenizer.ggml.pre`` names the split regex llama.cpp should use, read off
  the tokenizer's own pre-tokenizer;
* sentencepiece-style BPE with byte fallback (``llama``: Llama 2, Mistral
  v0.1-v0.3), as its Hugging Face fast tokenizer holds it. llama.cpp's
  sentencepiece tokenizer merges the adjacent pair whose result has the highest
  *score*, while the fast tokenizer applies merges by rank, so each token's score
  is minus the rank of the merge that makes it: the two orders are then the same
  (a Llama 2 ``tokenizer.model`` carries the same ordering in its own scores).
  The merges are written too, which is what transformers rebuilds the tokenizer
  from when the file is loaded back and checked.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ...errors import QloraError

# Token types (llama.cpp's llama_token_type): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")
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
    kind = _vocab_kind(spec)
    vocab = tokenizer.get_vocab()
    size = max(vocab_size, max(vocab.values()) + 1)
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [UNUSED] * size
    for tok, i in vocab.items():
        tokens[i], types[i] = tok, NORMAL
        if kind == "llama" and _BYTE_TOKEN.fullmatch(tok):
            types[i] = BYTE
    added = {t.content: t.special for t in getattr(tokenizer, "added_tokens_decoder", {}).values()}
    for tok, special in added.items():
        if tok in vocab:
            types[vocab[tok]] = CONTROL if special else USER_DEFINED
    if kind == "llama" and tokenizer.unk_token_id is not None:
        types[tokenizer.unk_token_id] = UNKNOWN
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    probe = tokenizer("a")["input_ids"]
    return {
        "model": kind, "scores": _merge_scores(tokens, types, merges) if kind == "llama" else None,
        "tokens": tokens, "types": types, "merges": merges,
        "pre": _pre_name(spec.get("pre_tokenizer")) if kind == "gpt2" else "default",
        "bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id,
        "unk": tokenizer.unk_token_id, "chat_template": tokenizer.chat_template if isinstance(
            tokenizer.chat_template, str) else None,
        "add_bos": bool(probe) and probe[0] == tokenizer.bos_token_id,
        "add_eos": bool(probe) and probe[-1] == tokenizer.eos_token_id and len(probe) > 1,
    }


def _vocab_kind(spec: dict[str, Any]) -> str:
    """``gpt2`` (byte-level BPE) or ``llama`` (sentencepiece-style BPE with byte fallback), else one refusal."""
    model, decoder = spec.get("model") or {}, spec.get("decoder") or {}
    steps = decoder.get("decoders") or [decoder]
    if model.get("type") == "BPE" and decoder.get("type") == "ByteLevel" and not model.get("byte_fallback"):
        return "gpt2"
    metaspace = any(d.get("type") == "Replace" and (d.get("pattern") or {}).get("String") == "\u2581" for d in steps)
    if model.get("type") == "BPE" and model.get("byte_fallback") and metaspace:
        return "llama"
    raise QloraError(f"the tokenizer is {model.get('type')} with a {decoder.get('type')} decoder, a vocabulary this "
                     "GGUF export cannot write.", where="tokenizer",
                     hint="Supported: byte-level BPE (Llama 3, SmolLM/SmolLM2, Qwen2/3) and sentencepiece-style BPE "
                          "with byte fallback (Llama 2, Mistral v0.1-v0.3). Merge to a Hugging Face folder instead "
                          "and convert it with llama.cpp's convert_hf_to_gguf.py.")


def _merge_scores(tokens: list[str], types: list[int], merges: list[str]) -> list[float]:
    """Minus the rank of the merge that makes each token (see the module docstring); others below every merge."""
    rank: dict[str, int] = {}
    for i, merge in enumerate(merges):
        rank.setdefault(merge.replace(" ", "", 1), i)
    floor = len(merges)
    return [0.0 if types[i] != NORMAL else -float(rank.get(tok, floor + i)) for i, tok in enumerate(tokens)]


def write_tokenizer(writer, fields: dict[str, Any]) -> None:
    writer.add_tokenizer_model(fields["model"])
    writer.add_tokenizer_pre(fields["pre"])
    writer.add_token_list(fields["tokens"])
    writer.add_token_types(fields["types"])
    if fields["scores"] is not None:
        writer.add_token_scores(fields["scores"])
    if fields["merges"]:
        writer.add_token_merges(fields["merges"])
    elif fields["scores"] is None:  # a vocabulary without merges (every token one byte): readers rebuild from scores
        writer.add_token_scores([0.0] * len(fields["tokens"]))
    for key, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                     ("pad", writer.add_pad_token_id), ("unk", writer.add_unk_token_id)):
        if fields[key] is not None:
            add(int(fields[key]))
    writer.add_add_bos_token(fields["add_bos"])
    writer.add_add_eos_token(fields["add_eos"])
    if fields["chat_template"]:
        writer.add_chat_template(fields["chat_template"])
