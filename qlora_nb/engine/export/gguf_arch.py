"""What llama.cpp needs to know about a supported architecture: its GGUF name, metadata, tensor names, rotary layout.

Only architectures whose GGUF files transformers can load back are supported,
because every export is verified by loading it back (:mod:`.gguf_check`); a
family we cannot read back we could not vouch for. Tensor names come from the
``gguf`` package's own ``TensorNameMap``; the one thing written here is the
Llama-family q/k row permutation: llama.cpp's rotary kernel for ``llama`` pairs
dimension i with i+1 inside each head, while Hugging Face pairs i with
i + head_dim/2, so the rows of q_proj and k_proj are interleaved on export
(transformers' GGUF loader undoes exactly this on the way back, which is what
makes the round trip a test of it). Qwen2/Qwen3 use the NeoX layout, unpermuted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import QloraError

# HF model_type -> (GGUF architecture, Llama-family rotary permutation of q/k rows)
SUPPORTED = {
    "llama": ("llama", True),
    "mistral": ("llama", True),
    "qwen2": ("qwen2", False),
    "qwen3": ("qwen3", False),
}
SUPPORTED_TEXT = "Llama family (Llama 2/3, SmolLM/SmolLM2, Mistral) and Qwen2/Qwen3"


@dataclass(frozen=True)
class Arch:
    model_type: str
    gguf_arch: str
    permute_qk: bool
    n_head: int
    n_head_kv: int
    n_layers: int


def arch_of(config: Any) -> Arch:
    """The GGUF description of a transformers config, or one refusal naming the supported list."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED:
        raise QloraError(f"GGUF export does not support the {model_type!r} architecture.", where="--format",
                         hint=f"Supported: {SUPPORTED_TEXT}. Merge to a Hugging Face folder instead "
                              "(%qlora_merge DIR without --format gguf).")
    rope = rope_settings(config)
    kind = rope.get("rope_type") or rope.get("type") or "default"
    if kind != "default":
        raise QloraError(f"the model uses {kind!r} rotary scaling, which this GGUF export does not write (transformers "
                         "could not load it back to verify).", where="--format",
                         hint="Merge to a Hugging Face folder instead, and convert it with llama.cpp's "
                              "convert_hf_to_gguf.py.")
    gguf_arch, permute = SUPPORTED[model_type]
    heads = config.num_attention_heads
    return Arch(model_type, gguf_arch, permute, heads, getattr(config, "num_key_value_heads", None) or heads,
                config.num_hidden_layers)


def rope_settings(config: Any) -> dict[str, Any]:
    """rope_theta and the scaling type, from transformers 5's ``rope_parameters`` or the older attributes."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    scaling = getattr(config, "rope_scaling", None) or {}
    if isinstance(scaling, dict):
        params = {**scaling, **params}
    if "rope_theta" not in params and getattr(config, "rope_theta", None) is not None:
        params["rope_theta"] = config.rope_theta
    return params


def head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def write_model_metadata(writer, config: Any, arch: Arch, name: str) -> None:
    """The ``<arch>.*`` hyper-parameters llama.cpp reads (and transformers maps back onto a config)."""
    writer.add_name(name)
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(arch.n_head)
    writer.add_head_count_kv(arch.n_head_kv)
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_freq_base(float(rope_settings(config).get("rope_theta", 10000.0)))
    dim = head_dim(config)
    writer.add_rope_dimension_count(dim)
    if dim != config.hidden_size // arch.n_head:
        writer.add_key_length(dim)
        writer.add_value_length(dim)
    writer.add_vocab_size(int(config.vocab_size))


def name_map(arch: Arch):
    import gguf

    enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch.gguf_arch)
    return gguf.get_tensor_name_map(enum, arch.n_layers)


def gguf_name(names, hf_key: str) -> str | None:
    """llama.cpp's tensor name for a checkpoint key (``None``: not a tensor llama.cpp has)."""
    return names.get_name(hf_key, try_suffixes=(".weight", ".bias"))


def row_order(arch: Arch, hf_key: str, rows: int):
    """The source row for each output row: llama.cpp's interleaved rotary layout for Llama q/k, else ``None``.

    Same result as llama.cpp's ``permute`` (reshape to heads x 2 x half, swap,
    flatten) but as an index, so a weight can be converted in row chunks.
    """
    if not arch.permute_qk or not hf_key.endswith((".q_proj.weight", ".k_proj.weight")):
        return None
    import numpy as np

    heads = arch.n_head if ".q_proj." in hf_key else arch.n_head_kv
    half = rows // heads // 2
    return np.arange(rows).reshape(heads, 2, half).swapaxes(1, 2).reshape(rows)
