"""Train a model's LoRA layers on a CPU through the fused op of :mod:`.fused_lora_op`.

A profile of one CPU training step of the demo model (SmolLM2-135M, NF4 + DQ,
r=16 on all 210 linear layers, batch 4 x ~78 tokens, bf16 autocast) through
peft's modules put 22-30% of the step in ``aten::bernoulli_`` (the dropout
masks), 7-8% in ``aten::mul`` and 6-7% in ``aten::copy_`` (casts); the fused op
removes most of that.

The fused path is taken only where it is the same computation: training mode
with gradients on a CPU, one active vanilla LoRA adapter (no DoRA or other
variant, no LoRA bias, not merged, adapters enabled, no per-row adapter
names), over a bitsandbytes ``Linear4bit`` or a plain ``nn.Linear``. Anything
else (evaluation, generation, 8-bit bases, GPUs) runs peft's own forward.
``TrainConfig.fused_lora`` turns it off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .dropout_mask import BITS, drop_probability, keep_mask  # noqa: F401  (re-exported: the tests' entry point)
from .forward_patch import patched_forwards
from .fused_lora_op import Absmax, fused_lora_fn


def _fused_forward(weights: Absmax, layer, original, x, *args, **kwargs):
    """``layer.forward`` while installed: the fused op where it applies, peft's forward elsewhere."""
    import torch
    from torch import nn

    if (args or kwargs or not layer.training or not torch.is_grad_enabled() or x.device.type != "cpu"
            or layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1):
        return original(x, *args, **kwargs)
    name = layer.active_adapters[0]
    if name not in layer.lora_A or name in getattr(layer, "lora_variant", {}):
        return original(x, *args, **kwargs)
    A, B = layer.lora_A[name].weight, layer.lora_B[name].weight
    if layer.lora_B[name].bias is not None:
        return original(x, *args, **kwargs)
    drop = layer.lora_dropout[name]
    p = float(drop.p) if isinstance(drop, nn.Dropout) else 0.0
    if autocast := torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
    else:
        dtype = x.dtype
    if not autocast and A.dtype != dtype:  # peft computes in the adapter's dtype here; leave that to peft
        return original(x, *args, **kwargs)
    return fused_lora_fn().apply(x, A, B, layer.get_base_layer(), float(layer.scaling[name]), p, dtype, weights)


def _eligible(module) -> bool:
    """A peft LoRA linear over a 4-bit bitsandbytes or a plain torch linear."""
    from torch import nn

    if not (hasattr(module, "lora_A") and hasattr(module, "get_base_layer")):
        return False
    base = module.get_base_layer()
    if type(base) is nn.Linear:
        return not getattr(module, "fan_in_fan_out", False)
    try:
        import bitsandbytes as bnb
    except ImportError:
        return False
    return isinstance(base, bnb.nn.Linear4bit)


@contextlib.contextmanager
def fused_lora(model, enabled: bool = True) -> Iterator[int]:
    """Within the block, eligible LoRA layers of ``model`` train through the fused op.

    Yields how many layers were switched; every one gets peft's forward back on exit, and the
    float32 block constants kept for the block (:class:`~.fused_lora_op.Absmax`) are dropped.
    """
    import functools

    weights = Absmax()
    try:
        with patched_forwards(model, _eligible, functools.partial(_fused_forward, weights), enabled) as switched:
            yield len(switched)
    finally:
        weights.clear()
