"""The fused CPU LoRA op: one LoRA layer's forward and backward as one autograd node.

peft runs a LoRA layer as separate modules: the frozen base linear (for 4-bit,
bitsandbytes' ``MatMul4Bit``), ``result.clone()``, ``nn.Dropout`` on the input,
``lora_A``, ``lora_B``, a multiply by the scaling and an add, each an autograd
node with its own dtype casts. On a 2-core CPU at the demo model's shapes
(SmolLM2-135M, ~316 tokens per step) each of those ops is small enough that
its dispatch and memory traffic cost more than its FLOPs.

:class:`FusedLora` computes, for one layer and one active adapter,

    y = x W^T + b + s' ((x * m) A^T) B^T,    s' = scaling / keep,

with W the frozen weight (dequantized from 4-bit by bitsandbytes' own
``dequantize_4bit`` kernel, in forward and again in backward, as bitsandbytes
does) and m a keep-mask (:mod:`.dropout_mask`). Backward is written out:
dx = g W + s' ((g B) A) * m, dA = s' (g B)^T (x * m), dB = s' g^T ((x * m) A^T).
The matmuls run in the compute dtype (bf16 under the Trainer's autocast,
exactly as peft's modules do under autocast); the adapters' gradients are
returned in float32 for their float32 master weights. It saves the masked
input (compute dtype), a bool mask and the (tokens, r) projection: 3 bytes per
input element instead of the 4 that peft's dropout mask plus its dropped copy
hold.

With double quantization, bitsandbytes dequantizes each layer's 8-bit block
constants to float32 before every weight dequantization; :class:`Absmax`
keeps those float32 constants for the duration of a run (4 bytes per 64
weights: 6.6 MB for the demo model), since the frozen weights do not change.

Tried and dropped (measured on the 2-core dev CPU, demo model, same process):
running q/k/v and gate/up as one op with stacked weights. The stacked forward
matmul is faster (576->960: 0.44 ms vs 0.72 ms for three), but the backward
with K = 3072 was slower (2.5 ms vs 1.9 ms) and stacking the dequantized
weights (no CPU kernel for ``dequantize_4bit.out`` in bitsandbytes 0.50)
cost 47 ms per step: 1.37 s/step grouped vs 1.21 s/step not.
"""

from __future__ import annotations

import functools
from typing import Any

from .dropout_mask import keep_mask, mask_factor


class Absmax:
    """Each 4-bit weight's float32 block constants, dequantized once (see the module docstring)."""

    def __init__(self) -> None:
        self._cache: dict[int, Any] = {}

    def clear(self) -> None:
        self._cache.clear()

    def weight(self, base, dtype):
        """``base``'s weight as a dense (out, in) tensor in ``dtype``."""
        weight = base.weight
        qs = getattr(weight, "quant_state", None)
        if qs is None:
            return weight if weight.dtype == dtype else weight.to(dtype)
        import bitsandbytes.functional as bnbf

        if not qs.nested:
            w = bnbf.dequantize_4bit(weight.data, qs)
        else:
            import torch

            absmax = self._cache.get(id(weight))
            if absmax is None:  # what bnbf.dequantize_4bit computes first for a nested state, on every call
                absmax = bnbf.dequantize_blockwise(qs.absmax, qs.state2) + qs.offset
                absmax = self._cache[id(weight)] = absmax.float()
            w = torch.ops.bitsandbytes.dequantize_4bit.default(weight.data, absmax, qs.blocksize, qs.quant_type,
                                                               qs.shape, qs.dtype)
            if weight.shape[0] == 1:  # bitsandbytes stores some weights transposed; its dequantize_4bit undoes it
                w = w.t()
        return w if w.dtype == dtype else w.to(dtype)


@functools.cache
def fused_lora_fn():
    """The :class:`FusedLora` autograd function, built on first use (torch is imported lazily)."""
    import torch

    class FusedLora(torch.autograd.Function):
        """One LoRA layer, forward and backward (see the module docstring)."""

        @staticmethod
        def forward(ctx, x, A, B, base, scaling: float, p: float, dtype, weights: Absmax):
            shape = x.shape
            with torch.autocast(x.device.type, enabled=False):
                xc = x.reshape(-1, shape[-1]).to(dtype)
                bias = base.bias.to(dtype) if base.bias is not None else None
                y = torch.nn.functional.linear(xc, weights.weight(base, dtype), bias)
                Ac, Bc = A.to(dtype), B.to(dtype)
                mask, s = None, scaling
                if p > 0:
                    mask, keep_scale = keep_mask(xc.shape, p, xc.device)
                    xc = xc * mask_factor(mask, dtype)
                    s = scaling * keep_scale
                h = xc @ Ac.t()
                y.addmm_(h, Bc.t(), alpha=s)
            ctx.base, ctx.s, ctx.shape, ctx.x_dtype, ctx.weights = base, s, shape, x.dtype, weights
            ctx.save_for_backward(xc, h, Ac, Bc, mask)
            return y.view(*shape[:-1], y.shape[-1])

        @staticmethod
        def backward(ctx, grad):
            xd, h, Ac, Bc, mask = ctx.saved_tensors
            s = ctx.s
            need_x, need_a, need_b = ctx.needs_input_grad[:3]
            dx = dA = dB = None
            with torch.autocast(grad.device.type, enabled=False):
                g = grad.reshape(-1, grad.shape[-1]).to(xd.dtype)
                gB = g @ Bc
                if need_b:
                    dB = (g.t() @ h).float().mul_(s)
                if need_a:
                    dA = (gB.t() @ xd).float().mul_(s)
                if need_x:
                    dx = g @ ctx.weights.weight(ctx.base, xd.dtype)
                    if mask is None:
                        dx.addmm_(gB, Ac, alpha=s)
                    else:
                        dx.add_((gB @ Ac).mul_(mask_factor(mask, xd.dtype)), alpha=s)
                    dx = dx.view(ctx.shape).to(ctx.x_dtype)
            return dx, dA, dB, None, None, None, None, None

    return FusedLora

