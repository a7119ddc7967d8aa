"""Streaming a merged model into one GGUF file, tensor by tensor, with the ``gguf`` package's own writer.

Memory: no merged copy of the model is ever built. Each checkpoint tensor is
read alone, the session's dequantized NF4 weight replaces it for quantized
linears (the adapter was trained against those, see :mod:`.merge`), peft's
``get_delta_weight`` adds scale*B@A, and the rows are converted in chunks into
the output type's bytes before the next tensor is read. The writer is told all
tensor shapes and types first (``add_tensor_info``), so header, metadata and
tensor table are written before any data and each tensor's bytes go straight
to the file (``write_tensor_data``). Peak memory above the session is about
one tensor in its stored dtype plus its converted bytes (measured in
``benchmarks/gguf_memory.py``).

Types: q8_0 and bf16 come from ``gguf.quants`` (numpy, bit-exact with ggml);
1-D tensors (norms, biases) stay F32 and a q8_0 tensor whose rows are not a
multiple of 32 stays F16, as llama.cpp's converter does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import QloraError
from .gguf_arch import Arch, gguf_name, name_map, row_order

if TYPE_CHECKING:
    from ..session import Session

# outtype -> (GGML tensor type name, llama.cpp file type name)
OUTTYPES = {"q8_0": ("Q8_0", "MOSTLY_Q8_0"), "f16": ("F16", "MOSTLY_F16"), "bf16": ("BF16", "MOSTLY_BF16"),
            "f32": ("F32", "ALL_F32")}
OUTTYPE_ALIASES = {"q8": "q8_0", "fp16": "f16", "float16": "f16", "bfloat16": "bf16", "fp32": "f32",
                   "float32": "f32"}
DEFAULT_OUTTYPE = "q8_0"  # the smallest type gguf-py writes that llama.cpp's converter also uses as a target
NEEDS_LLAMA_QUANTIZE = ("q4_k_m", "q4_k_s", "q5_k_m", "q5_k_s", "q6_k", "q3_k_m", "q2_k", "q4_0", "q4_1", "q5_0",
                        "q5_1", "iq4_xs")
QUANTIZE_HINT = ("K-quants (Q4_K_M, Q5_K_M, Q6_K, …) need llama.cpp's C++ quantizer: export --outtype f16, then run "
                 "`llama-quantize DIR/<model>-f16.gguf DIR/<model>-Q4_K_M.gguf Q4_K_M`, or let Ollama do it: "
                 "`ollama create NAME --quantize q4_K_M -f DIR/Modelfile`.")
_CHUNK_ROWS = 2048  # rows converted at once: bounds the fp32 working copy of the largest (embedding) tensor


def normalize_outtype(outtype: str) -> str:
    key = str(outtype).strip().lower()
    key = OUTTYPE_ALIASES.get(key, key)
    if key in OUTTYPES:
        return key
    if key in NEEDS_LLAMA_QUANTIZE:
        raise QloraError(f"--outtype {outtype} cannot be written without llama.cpp's C++ quantizer.",
                         where="--outtype", hint=QUANTIZE_HINT)
    raise QloraError(f"{outtype!r} is not a GGUF output type.", where="--outtype",
                     hint="Accepted: q8_0 (default), f16, bf16, f32. " + QUANTIZE_HINT)


@dataclass
class Planned:
    """One tensor of the file: where it comes from and what it becomes."""

    hf_key: str
    name: str
    shape: tuple[int, ...]
    qtype: str  # GGML type name

    @property
    def nbytes(self) -> int:
        import gguf

        qt = gguf.GGMLQuantizationType[self.qtype]
        block, size = gguf.GGML_QUANT_SIZES[qt]
        n = 1
        for d in self.shape:
            n *= d
        return n // block * size


def tensor_type(shape: tuple[int, ...], outtype: str) -> str:
    if len(shape) == 1 or outtype == "f32":
        return "F32"
    if outtype == "q8_0":
        return "Q8_0" if shape[-1] % 32 == 0 else "F16"
    return OUTTYPES[outtype][0]


class CheckpointTensors:
    """Read one tensor at a time from the base model's safetensors (one file or an index of shards)."""

    def __init__(self, folder: Path) -> None:
        from safetensors import safe_open

        index = folder / "model.safetensors.index.json"
        if index.is_file():
            files = {k: folder / v for k, v in json.loads(index.read_text(encoding="utf-8"))["weight_map"].items()}
        elif (folder / "model.safetensors").is_file():
            with safe_open(str(folder / "model.safetensors"), framework="pt") as fh:
                files = dict.fromkeys(fh.keys(), folder / "model.safetensors")
        else:
            raise QloraError(f"{folder} has no model.safetensors, so its tensors cannot be streamed into a GGUF.",
                             where="--format", hint="GGUF export reads the base model's safetensors checkpoint; "
                                                    "load the model from a safetensors folder.")
        self.files = files

    def keys(self) -> list[str]:
        return list(self.files)

    def shape(self, key: str) -> tuple[int, ...]:
        from safetensors import safe_open

        with safe_open(str(self.files[key]), framework="pt") as fh:
            return tuple(fh.get_slice(key).get_shape())

    def get(self, key: str):
        from safetensors import safe_open

        with safe_open(str(self.files[key]), framework="pt") as fh:
            return fh.get_tensor(key)


def _lora_modules(session: Session, adapter: str) -> dict[str, Any]:
    """Module path (as in the checkpoint) -> the peft LoRA layer holding ``adapter``."""
    out = {}
    for path, module in session.model.get_base_model().named_modules():
        if adapter in getattr(module, "lora_A", {}) or adapter in getattr(module, "lora_embedding_A", {}):
            out[path] = module
    return out


def _trained_copies(session: Session, adapter: str) -> dict[str, Any]:
    """Module path -> the fully trained copy peft keeps for ``modules_to_save`` (it replaces the base weight)."""
    out = {}
    for path, module in session.model.get_base_model().named_modules():
        copies = getattr(module, "modules_to_save", None)
        if copies is not None and adapter in copies:
            out[path] = copies[adapter]
    return out


def quantized_modules(session: Session) -> dict[str, Any]:
    """Module path (as in the checkpoint) -> every bitsandbytes 4/8-bit linear of the session, LoRA-wrapped or not.

    Their dequantized weights are what the session computes with, so they replace the checkpoint's for every
    quantized linear, targeted by the adapter or not (and for the whole base in a base-only file).
    """
    out = {}
    for path, module in session.model.get_base_model().named_modules():
        if type(getattr(module, "weight", None)).__name__ in ("Params4bit", "Int8Params"):
            out[path.removesuffix(".base_layer")] = module
    return out


def _dequantized(layer):
    """The weight the forward uses, fp32 on CPU: bitsandbytes' dequantization for 4/8-bit, else the tensor."""
    weight = layer.weight
    if type(weight).__name__ in ("Params4bit", "Int8Params"):
        from peft.utils.integrations import dequantize_bnb_weight

        return dequantize_bnb_weight(weight, state=getattr(layer, "state", None)).float().cpu()
    return weight.detach().float().cpu()


def plan_tensors(session: Session, arch: Arch, outtype: str,
                 adapter: str) -> tuple[list[Planned], CheckpointTensors, dict, dict]:
    """Every tensor the file will hold, with shapes and types, before anything is read or written."""
    ckpt = CheckpointTensors(session.model_path)
    names = name_map(arch)
    loras, copies = _lora_modules(session, adapter), _trained_copies(session, adapter)
    keys = ckpt.keys()
    tied = "lm_head.weight" not in keys
    if tied and ("lm_head" in loras or "lm_head" in copies):
        keys.append("lm_head.weight")  # a trained head on tied embeddings becomes its own output.weight
    planned = []
    for key in keys:
        name = gguf_name(names, key)
        if name is None:
            if key.endswith("rotary_emb.inv_freq"):
                continue
            raise QloraError(f"checkpoint tensor {key!r} has no llama.cpp name for the {arch.gguf_arch} architecture.",
                             where="--format", hint="This checkpoint has parts llama.cpp's "
                                                    f"{arch.gguf_arch} does not; merge to a Hugging Face folder instead.")
        shape = ckpt.shape("model.embed_tokens.weight" if key == "lm_head.weight" and tied else key)
        planned.append(Planned(key, name, shape, tensor_type(shape, outtype)))
    return planned, ckpt, loras, copies


def tensor_rows(arch: Arch, item: Planned, ckpt: CheckpointTensors, loras: dict, copies: dict,
                adapter: str, quantized: dict | None = None) -> Iterator[Any]:
    """The merged tensor's rows as fp32 numpy chunks, in llama.cpp's row order.

    ``quantized`` (:func:`quantized_modules`): quantized linears whose dequantized weight replaces the checkpoint's.
    """
    import torch

    module_path = item.hf_key.rsplit(".", 1)[0]
    if module_path in copies:
        source = copies[module_path].weight.detach().cpu()
    elif module_path in loras and item.hf_key.endswith(".weight"):
        source = _dequantized(loras[module_path].get_base_layer())
    elif module_path in (quantized or {}) and item.hf_key.endswith(".weight"):
        source = _dequantized(quantized[module_path])
    elif item.hf_key == "lm_head.weight" and item.hf_key not in ckpt.files:
        source = ckpt.get("model.embed_tokens.weight")
    else:
        source = ckpt.get(item.hf_key)
    delta = None
    if module_path in loras and item.hf_key.endswith(".weight"):
        with torch.no_grad():
            delta = loras[module_path].get_delta_weight(adapter).float().cpu()
        if delta.shape != source.shape:
            delta = delta.T  # peft returns the embedding update transposed to (in, out)
    order = row_order(arch, item.hf_key, item.shape[0])
    if source.dim() == 1:
        yield source.float().numpy()
        return
    for start in range(0, item.shape[0], _CHUNK_ROWS):
        rows = (torch.as_tensor(order[start:start + _CHUNK_ROWS]) if order is not None
                else slice(start, start + _CHUNK_ROWS))
        chunk = source[rows].float()
        if delta is not None:
            chunk = chunk + delta[rows]
        yield chunk.numpy()


def convert_chunk(rows, qtype: str):
    """fp32 rows -> the bytes (or array) of ``qtype``, with the ``gguf`` package's own quantizers."""
    import gguf
    import numpy as np

    if qtype == "F32":
        return np.ascontiguousarray(rows, dtype=np.float32)
    if qtype == "F16":
        return rows.astype(np.float16)
    return gguf.quants.quantize(np.ascontiguousarray(rows, dtype=np.float32), gguf.GGMLQuantizationType[qtype])


def write_gguf(path: Path, planned: list[Planned], metadata: Callable[[Any], None], arch: Arch,
               rows_of: Callable[[Planned], Iterator[Any]], on_tensor: Callable[[int, int], None] | None = None) -> int:
    """Header, metadata and tensor table first, then each tensor's bytes as soon as it is converted."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch.gguf_arch)
    try:
        metadata(writer)
        for item in planned:
            qt = gguf.GGMLQuantizationType[item.qtype]
            if item.qtype in ("F32", "F16"):
                writer.add_tensor_info(item.name, item.shape, np.dtype(np.float32 if item.qtype == "F32"
                                                                         else np.float16), item.nbytes)
            else:
                byte_shape = gguf.quant_shape_to_byte_shape(item.shape, qt)
                writer.add_tensor_info(item.name, byte_shape, np.dtype(np.uint8), item.nbytes, raw_dtype=qt)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for i, item in enumerate(planned):
            data, start = None, 0
            for rows in rows_of(item):
                part = convert_chunk(rows, item.qtype)
                if data is None:  # one buffer of the output bytes, filled chunk by chunk
                    data = part if part.shape[0] == item.shape[0] else np.empty(
                        (item.shape[0], *part.shape[1:]), dtype=part.dtype)
                if data is not part:
                    data[start:start + part.shape[0]] = part
                start += part.shape[0]
            writer.write_tensor_data(data)
            del data
            if on_tensor is not None:
                on_tensor(i + 1, len(planned))
    finally:
        writer.close()
    return path.stat().st_size
