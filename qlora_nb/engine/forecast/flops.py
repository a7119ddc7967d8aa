"""Model FLOPs of a LoRA training step, and the machine's matmul peak: the two halves of an MFU.

:func:`step_flops` counts the matmul work a training step must do, from the
model's own layers and the batch (elementwise ops, norms and softmax are left
out, as MFU conventionally does). Per non-padding token and linear layer of
``K`` inputs and ``N`` outputs:

* a frozen linear: forward plus the input-gradient backward, ``4 K N`` (its
  weight gets no gradient);
* a LoRA adapter of rank ``r`` on it: forward ``2 r (K + N)``, backward twice
  that (input gradient and both adapter gradients), ``6 r (K + N)``;
* attention: ``QK^T`` and ``PV`` forward ``4 l d`` per token of a row of
  ``l`` tokens (``d`` = heads x head_dim), backward twice that: ``12 l d``;
* the output layer only on the labelled positions (see ``engine/training/loss.py``):
  ``4 d_model V`` each.

:func:`matmul_peak` times ``torch.nn.functional.linear`` at the model's own
layer shapes in the given dtype and keeps the best; it is what "the hardware's
limit" means for this workload.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class FlopsModel:
    """Per-token FLOPs of a model's linears plus what depends on the batch (attention, labelled tokens)."""

    per_token: float        # frozen linears (4KN) + LoRA (6r(K+N)), summed over all layers
    attention_width: int    # heads x head_dim, summed over layers (times 12 l per token)
    head: float             # 4 * d_model * vocab per labelled token
    shapes: list[tuple[int, int]]  # distinct (in, out) of the decoder's linears, for the peak

    def step(self, tokens: int, sum_sq_lengths: int, labelled: int) -> float:
        """FLOPs of one step over ``tokens`` non-padding tokens in rows with Σ l² = ``sum_sq_lengths``."""
        return self.per_token * tokens + 12.0 * self.attention_width * sum_sq_lengths + self.head * labelled

    def batch(self, inputs: dict[str, Any]) -> float:
        """FLOPs of one step on a collated batch (``input_ids``, ``attention_mask``, ``labels``)."""
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        lengths = mask.sum(-1) if mask is not None and mask.dim() == 2 else None
        if lengths is None:  # packed rows: one row, no mask; count it as one sequence (an upper bound)
            lengths = ids.new_full((ids.shape[0],), ids.shape[-1])
        labels = inputs.get("labels")
        labelled = int((labels[..., 1:] != -100).sum()) if labels is not None else int(lengths.sum())
        return self.step(int(lengths.sum()), int((lengths.long() ** 2).sum()), labelled)


def flops_model(model: Any) -> FlopsModel:
    """The :class:`FlopsModel` of a (peft-wrapped) causal LM, from its actual modules."""
    from torch import nn

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    per_token, shapes, inside_lora = 0.0, set(), set()
    for module in base.modules():
        if id(module) in inside_lora or module is head:
            continue
        if hasattr(module, "lora_A") and hasattr(module, "get_base_layer"):
            inner = module.get_base_layer()
            k, n = inner.in_features, inner.out_features
            r = sum(m.out_features for name, m in module.lora_A.items() if name in module.active_adapters)
            per_token += 4.0 * k * n + 6.0 * r * (k + n)
            shapes.add((k, n))
            inside_lora.update(id(m) for m in module.modules())
        elif isinstance(module, nn.Linear):
            per_token += 4.0 * module.in_features * module.out_features
            shapes.add((module.in_features, module.out_features))
    cfg = base.config
    cfg = getattr(cfg, "text_config", cfg)
    heads = getattr(cfg, "num_attention_heads", 0) or 0
    head_dim = getattr(cfg, "head_dim", None) or (cfg.hidden_size // heads if heads else 0)
    layers = getattr(cfg, "num_hidden_layers", 0) or 0
    out = 4.0 * head.in_features * head.out_features if head is not None else 0.0
    return FlopsModel(per_token, layers * heads * head_dim, out, sorted(shapes))


_PEAKS: dict[tuple[str, str, int], float] = {}
PEAKS_FILE = "matmul_peaks.json"  # in the toolkit's cache: one measurement per machine, kept across processes


def _machine(device: str) -> str:
    """What the peak belongs to: the CPU model and core count, or the GPU's name."""
    import torch

    if str(device).startswith("cuda"):
        return "cuda:" + torch.cuda.get_device_name(torch.device(device))
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    return f"cpu:{name}:{os.cpu_count()}"


def _peaks_file() -> Path:
    from ..model.models import cache_dir

    return cache_dir() / PEAKS_FILE


def _read_peaks() -> dict[str, float]:
    try:
        data = json.loads(_peaks_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_peak(key: str, value: float) -> None:
    """Record a measured peak; a cache that cannot be written only means measuring again next time."""
    from ...fileio import write_text_atomic

    data = _read_peaks()
    data[key] = value
    with contextlib.suppress(OSError):
        _peaks_file().parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(_peaks_file(), json.dumps(data, indent=1, sort_keys=True))


def own_rng(device: str = "cpu"):
    """Measure with random tensors without drawing from the global generators a run was seeded with.

    The first measurement in a process (or on a machine) happens between the Trainer's ``set_seed`` and
    the first step: drawing its tensors from torch's global generator shifted the run's dropout masks, so a
    run with a given seed trained differently in a fresh process than in one that had measured before.
    """
    import torch

    return torch.random.fork_rng(devices=[torch.device(device)] if str(device).startswith("cuda") else [])


def matmul_peak(shapes: list[tuple[int, int]], dtype: str = "bfloat16", device: str = "cpu", tokens: int = 320,
                seconds: float = 0.3, cache: bool = True) -> float:
    """Best FLOP/s of ``F.linear`` at ``(tokens, in) @ (in, out)`` for the given shapes, within ``seconds``.

    Kept per (device, dtype, thread count) for the process and, with ``cache``, per machine in the
    toolkit's cache (``matmul_peaks.json``): a 0.3 s measurement taken while the machine is busy reads
    low and would inflate every later MFU, so the first one is not repeated by every run.
    """
    import torch

    key = (str(device), dtype, torch.get_num_threads())
    if key in _PEAKS:
        return _PEAKS[key]
    shapes = list(shapes)[:6]
    disk_key = f"{_machine(device)}|{dtype}|threads={key[2]}|tokens={tokens}|{sorted(shapes)}"
    if cache and isinstance(known := _read_peaks().get(disk_key), (int, float)) and known > 0:
        _PEAKS[key] = float(known)
        return _PEAKS[key]
    dt = getattr(torch, dtype)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    best = 0.0
    with own_rng(device):
        pairs = [(torch.randn(tokens, k, dtype=dt, device=device), torch.randn(n, k, dtype=dt, device=device))
                 for k, n in shapes] or [(torch.randn(tokens, 512, dtype=dt, device=device),
                                          torch.randn(512, 512, dtype=dt, device=device))]
    budget = seconds / len(pairs)
    for x, w in pairs:
        flop = 2.0 * x.shape[0] * x.shape[1] * w.shape[0]
        torch.nn.functional.linear(x, w)  # first call: kernel selection, packing
        end = time.perf_counter() + budget
        while time.perf_counter() < end:
            sync()
            t = time.perf_counter()
            torch.nn.functional.linear(x, w)
            sync()
            dt_s = time.perf_counter() - t
            if dt_s > 0:
                best = max(best, flop / dt_s)
    _PEAKS[key] = best
    if cache and best > 0:
        _write_peak(disk_key, best)
    return best
