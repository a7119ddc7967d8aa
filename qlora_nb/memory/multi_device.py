"""What one device holds when N devices train together (DDP, FSDP, FSDP + CPU offload), and the host RAM.

The single-device components of :mod:`.planner` are re-divided per device:

* **DDP** replicates everything; each device also keeps DDP's flat gradient
  buckets, one more copy of the trainable gradients (``ddp_buckets``).
* **FSDP** (FULL_SHARD) keeps 1/N of the weights, quantization constants,
  adapters, their gradients and optimizer states. While a wrapped unit runs,
  its full parameters are all-gathered: with backward prefetch two decoder
  layers are gathered at once, plus the root unit (embeddings, final norm,
  ``lm_head``) that stays gathered through the step. The gathered bytes a
  device does not own are ``fsdp_gathered``. Activations, logits and the
  runtime do not shard: each device still runs its own micro-batch.
* **CPU offload** moves the sharded parameters, their gradients and the
  optimizer states to host RAM (they are stepped there); the device keeps only
  the gathered units, activations, logits and the runtime.

Host RAM: every process has its runtime, and loading needs the weights once
with ``cpu_ram_efficient_loading`` (rank 0 reads them, the other ranks start on
the meta device and receive their shards), N times without it; offload adds
every rank's shards. Checked against Answer.AI's published per-GPU peaks in
benchmarks/multi_device_check.py (RESULTS.md).
"""

from __future__ import annotations

import math
from typing import Any

from .architectures import Arch
from .formulas import DTYPE_BYTES

SHARDED = ("quantized_weights", "quant_constants", "other_weights", "adapters", "gradients", "optimizer_states")
PREFETCHED_LAYERS = 2  # the layer computing and the one backward prefetch (BACKWARD_PRE) gathers
HOST_RUNTIME_BYTES = 3 * 2**30  # a CUDA training process's host RSS: python, torch, CUDA libraries (estimate)


def _root_weight_bytes(arch: Arch, cfg) -> int:
    """The root unit's parameters: embeddings (+ an untied lm_head) and the final norm, in the compute dtype."""
    return (arch.embedding_params() + arch.hidden) * DTYPE_BYTES[cfg.compute_dtype]


def _layer_unit_bytes(arch: Arch, comp: dict[str, int], root: int) -> int:
    """One decoder layer's full parameters (4-bit packed + constants + norms + adapters)."""
    per_layer = comp["quantized_weights"] + comp["quant_constants"] + comp["other_weights"] - root + comp["adapters"]
    return per_layer // max(1, arch.layers)


def per_device(arch: Arch, cfg, comp: dict[str, int]) -> dict[str, int]:
    """The components one device holds at its peak for ``cfg.gpus`` / ``cfg.strategy`` / ``cfg.cpu_offload``."""
    n = int(getattr(cfg, "gpus", 1) or 1)
    strategy = getattr(cfg, "strategy", "ddp")
    out = dict(comp)
    if strategy != "fsdp":
        if n > 1:
            out["ddp_buckets"] = comp["gradients"]
        return out
    root = _root_weight_bytes(arch, cfg)
    unit = _layer_unit_bytes(arch, comp, root)
    gathered = root + PREFETCHED_LAYERS * unit
    if getattr(cfg, "cpu_offload", False):
        for k in SHARDED:
            out[k] = 0
        out["fsdp_gathered"] = gathered  # nothing of the unit lives on the device between uses
    else:
        for k in SHARDED:
            out[k] = math.ceil(comp[k] / n)
        out["fsdp_gathered"] = gathered * (n - 1) // n  # this device's own shard is counted above
    return out


def host_ram(arch: Arch, cfg, comp: dict[str, int], runtime: int | None = None) -> dict[str, Any]:
    """Host RAM the run needs, by cause: runtimes, loading, offloaded shards (bytes)."""
    n = int(getattr(cfg, "gpus", 1) or 1)
    fsdp = getattr(cfg, "strategy", "ddp") == "fsdp"
    weights = comp["quantized_weights"] + comp["quant_constants"] + comp["other_weights"]
    runtimes = n * (HOST_RUNTIME_BYTES if runtime is None else runtime)
    loading = weights if fsdp else n * weights  # cpu_ram_efficient_loading: rank 0 alone reads the weights
    offload = sum(comp[k] for k in SHARDED) if fsdp and getattr(cfg, "cpu_offload", False) else 0
    # loading comes first and its copy is freed once the shards are placed; offloaded shards stay for the run
    return {"runtimes": runtimes, "loading": loading, "offloaded_shards": offload,
            "total": runtimes + max(loading, offload)}


def describe(cfg) -> str:
    n = int(getattr(cfg, "gpus", 1) or 1)
    if n == 1 and getattr(cfg, "strategy", "ddp") != "fsdp":
        return ""
    what = "FSDP (full shard)" if cfg.strategy == "fsdp" else "DDP (replicated)"
    return f"{n} devices, {what}" + (", CPU offload" if getattr(cfg, "cpu_offload", False) else "")


# Link bandwidths for the communication term (bytes/s, achievable collective bus bandwidth, not the headline).
# Estimates, not measured here: PCIe 4.0 x16 moves about 25 GB/s each way and NCCL reaches roughly 80% of it;
# NVLink on SXM boards (A100/H100/H200) reaches 150+ GB/s; gloo between CPU processes on one host goes through
# shared memory at a few GB/s.
LINK_BYTES_PER_S = {"pcie": 20e9, "nvlink": 150e9, "cpu": 4e9}
HOST_LINK_BYTES_PER_S = 20e9  # CPU offload: parameters host -> device and gradients back, over PCIe


def communication_bytes(cfg, whole: dict[str, int]) -> dict[str, float]:
    """Bytes one device sends and receives per optimizer step over the device link (and the host link).

    ``whole`` is the single-device components (the unsharded sizes). Ring collectives move (n-1)/n of the
    buffer per device for a reduce-scatter or an all-gather, twice that for an all-reduce.

    * DDP: one all-reduce of the trainable gradients per optimizer step (accumulation steps skip it).
    * FSDP: every micro-batch all-gathers each unit's parameters in forward and again in backward (they are
      freed after use), and reduce-scatters the gradients.
    * CPU offload: the parameter shards also come from host RAM in forward and backward, and the gradient
      shards go back, over the host link, every micro-batch.
    """
    n = int(getattr(cfg, "gpus", 1) or 1)
    if n <= 1:
        return {"link": 0.0, "host": 0.0}
    share = (n - 1) / n
    grads = whole["gradients"]
    if getattr(cfg, "strategy", "ddp") != "fsdp":
        return {"link": 2 * share * grads, "host": 0.0}
    micro = max(1, int(getattr(cfg, "gradient_accumulation_steps", 1) or 1))
    params = sum(whole[k] for k in ("quantized_weights", "quant_constants", "other_weights", "adapters"))
    link = micro * (2 * share * params + share * grads)
    host = micro * (2 * params + grads) / n if getattr(cfg, "cpu_offload", False) else 0.0
    return {"link": link, "host": host}


def communication_seconds(cfg, whole: dict[str, int], interconnect: str) -> float:
    """Seconds per optimizer step spent communicating, counted as not overlapped with compute (an upper bound:
    FSDP prefetches the next unit while one computes, DDP overlaps its buckets with backward)."""
    moved = communication_bytes(cfg, whole)
    link = LINK_BYTES_PER_S["cpu" if getattr(cfg, "device", "cuda") == "cpu" else interconnect]
    return moved["link"] / link + moved["host"] / HOST_LINK_BYTES_PER_S

