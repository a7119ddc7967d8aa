"""What a GGUF says about itself, read from its header before anything is loaded, and whether it fits the session.

transformers builds a model from a GGUF's metadata and falls back to the
config class's defaults for every missing hyper-parameter: a file with an
architecture key but no dimensions becomes ``LlamaConfig()``, a 7B model in
fp32 (about 27 GB), and the kernel is killed for memory before any error can
be raised. And a file of another model with the same tokenizer loads fine and
generates: shown beside the session it would pass for the adapter's effect.
So ``gguf.GGUFReader`` (a memory map: no tensor is read) is asked first for the
architecture, the dimensions, the vocabulary and every tensor's shape and
bytes, and a file that is incomplete, inconsistent, an adapter rather than a
model, of another model than the session's base, or bigger than the free
memory is refused in one paragraph before a byte is allocated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import QloraError
from ...units import human_bytes
from .gguf_arch import SUPPORTED

# the hyper-parameters transformers reads back from ``<arch>.*`` (without them it builds a default-size model)
REQUIRED = ("context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count")
# session config attribute -> GGUF key (under ``<arch>.``) compared on attach
COMPARED = {"hidden_size": "embedding_length", "num_hidden_layers": "block_count",
            "intermediate_size": "feed_forward_length", "num_attention_heads": "attention.head_count",
            "num_key_value_heads": "attention.head_count_kv"}
FP32_BYTES = 4  # the column is loaded back dequantized to fp32 (engine/export/gguf_check.load_back)
HEADROOM = 0.9  # refuse when the estimate is above this share of the free memory


@dataclass
class GGUFHeader:
    """The header of a GGUF file: metadata values and per-tensor shapes (llama.cpp's order, ne0 first) and bytes."""

    file: Path
    metadata: dict[str, Any]
    tensors: dict[str, tuple[tuple[int, ...], int, int]] = field(default_factory=dict)  # name -> (shape, elems, bytes)

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    def hparam(self, key: str) -> Any:
        return self.metadata.get(f"{self.architecture}.{key}")

    @property
    def n_vocab(self) -> int | None:
        """The embedding's rows: ``<arch>.vocab_size`` when written, else the tokenizer's token count."""
        size = self.hparam("vocab_size")
        if isinstance(size, int):
            return size
        tokens = self.metadata.get("tokenizer.ggml.tokens")
        return len(tokens) if isinstance(tokens, list) else None

    @property
    def n_elements(self) -> int:
        return sum(t[1] for t in self.tensors.values())

    @property
    def file_bytes(self) -> int:
        return sum(t[2] for t in self.tensors.values())

    @property
    def load_bytes(self) -> int:
        """Bytes of the model transformers builds from it: every tensor dequantized to fp32."""
        return self.n_elements * FP32_BYTES

    def layers_with_tensors(self) -> int:
        return len({m.group(1) for name in self.tensors if (m := re.match(r"blk\.(\d+)\.", name))})


def _value(f: Any) -> Any:
    try:
        value = f.contents()
    except Exception:  # noqa: BLE001 - a value gguf cannot decode is treated as absent
        return None
    return value.tolist() if hasattr(value, "tolist") else value


def read_header(file: Path, where: str = "--gguf") -> GGUFHeader:
    """The metadata and tensor table of ``file`` (memory-mapped: no tensor data is read)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(file))
        metadata = {name: _value(f) for name, f in reader.fields.items() if not name.startswith("GGUF.")}
        tensors = {t.name: (tuple(int(d) for d in t.shape), int(t.n_elements), int(t.n_bytes))
                   for t in reader.tensors}
    except Exception as exc:  # noqa: BLE001 - the reader raises ValueError/IndexError/struct.error on a cut file
        raise QloraError(f"{file} is truncated or damaged ({type(exc).__name__}: {str(exc)[:120]}).", where=where,
                         hint=f"Its size is {file.stat().st_size:,} bytes; write or copy it again.") from None
    return GGUFHeader(Path(file), metadata, tensors)


def _refuse(header: GGUFHeader, what: str, hint: str, where: str) -> QloraError:
    return QloraError(f"{header.file} {what} Nothing was loaded.", where=where, hint=hint)


def check_complete(header: GGUFHeader, where: str = "--gguf") -> None:
    """A model file whose metadata lets transformers build exactly the model its tensors hold."""
    redo = "Write it again with %qlora_merge DIR --format gguf (or llama.cpp's convert_hf_to_gguf.py)."
    kind = header.metadata.get("general.type")
    if kind == "adapter" or any(name.endswith((".lora_a", ".lora_b")) for name in header.tensors):
        raise _refuse(header, "is a LoRA adapter GGUF, not a model: it cannot answer on its own.",
                      "Attach the merged model file (%qlora_merge DIR --format gguf); the adapter file is for "
                      "llama.cpp/Ollama on top of the base.", where)
    arch = header.architecture
    if arch is None:
        raise _refuse(header, "has no general.architecture key, so what model it holds is unknown.", redo, where)
    missing = [f"{arch}.{k}" for k in REQUIRED if not isinstance(header.hparam(k), int)]
    if not isinstance(header.metadata.get("tokenizer.ggml.tokens"), list):
        missing.append("tokenizer.ggml.tokens")
    if missing:
        raise _refuse(header, f"has incomplete metadata: {', '.join(missing)} missing. transformers would build "
                      "its default-size model in their place (a 7B Llama is about 27 GB in fp32).", redo, where)
    if not header.tensors:
        raise _refuse(header, "holds no tensors.", redo, where)
    embd = header.tensors.get("token_embd.weight")
    hidden, blocks = header.hparam("embedding_length"), header.hparam("block_count")
    problems = []
    if embd is None:
        problems.append("it has no token_embd.weight tensor")
    elif embd[0] != (hidden, header.n_vocab):
        problems.append(f"token_embd.weight is {embd[0][1]:,} x {embd[0][0]:,} but the metadata says "
                        f"{header.n_vocab:,} tokens x {hidden:,}")
    if header.layers_with_tensors() != blocks:
        problems.append(f"tensors exist for {header.layers_with_tensors()} layers but {arch}.block_count is {blocks}")
    if problems:
        raise _refuse(header, "is inconsistent: " + "; ".join(problems) + ".", redo, where)


def check_matches(header: GGUFHeader, config: Any, where: str = "--gguf") -> None:
    """The file holds a model of the session's base: same architecture, dimensions and vocabulary size."""
    model_type = getattr(config, "model_type", None)
    expected_arch = SUPPORTED.get(model_type, (model_type, False))[0]
    wrong = []
    if header.architecture != expected_arch:
        wrong.append(f"architecture {header.architecture!r} (the session's is {expected_arch!r})")
    for attr, key in COMPARED.items():
        mine = getattr(config, attr, None)
        if attr == "num_key_value_heads":
            mine = mine or getattr(config, "num_attention_heads", None)
        theirs = header.hparam(key)
        if key == "attention.head_count_kv" and theirs is None:
            theirs = header.hparam("attention.head_count")
        if mine is not None and theirs != mine:
            wrong.append(f"{attr} {theirs} (the session's is {mine})")
    vocab = getattr(config, "vocab_size", None)
    if vocab is not None and header.n_vocab != vocab:
        wrong.append(f"vocabulary {header.n_vocab:,} tokens (the session's is {vocab:,}), so its tokenizer splits "
                     "text differently")
    if wrong:
        raise _refuse(header, "is another model than this session's base "
                      f"({getattr(config, '_name_or_path', '') or model_type}): " + "; ".join(wrong) + ". Its "
                      "answers beside the base would not show the adapter's effect.",
                      "Attach a GGUF exported from this session (%qlora_merge DIR --format gguf), or load the "
                      "model that file was made from.", where)


def check_memory(header: GGUFHeader, where: str = "--gguf", available: int | None = None) -> int:
    """The fp32 bytes loading it takes; refused when above the free memory (``psutil``'s available)."""
    need = header.load_bytes
    if available is None:
        import psutil

        available = int(psutil.virtual_memory().available)
    if need > HEADROOM * available:
        raise _refuse(header, f"would take about {human_bytes(need)} to load back (its {header.n_elements:,} "
                      f"weights in fp32), but only {human_bytes(available)} of memory is free.", "Free memory first (%qlora_unload other sessions, or detach_gguf()), or run the file "
                      "with llama.cpp / Ollama instead of beside the session.", where)
    return need


def check_before_loading(file: Path, config: Any, where: str = "--gguf", freed: int = 0,
                         sized: bool = True) -> GGUFHeader:
    """Every header check, in order: complete, the session's base, and (``sized``: loaded back in fp32) fits in
    memory (``freed``: bytes released first)."""
    import psutil

    header = read_header(file, where)
    check_complete(header, where)
    check_matches(header, config, where)
    if sized:
        check_memory(header, where, int(psutil.virtual_memory().available) + freed)
    return header
