"""RMSNorm with a written-out backward for CPU training, where the norm's weight is frozen.

transformers' Llama-family ``RMSNorm.forward`` is ``weight * (x.float() *
rsqrt(mean(x^2) + eps)).to(x.dtype)``: eight autograd ops forward and about a
dozen backward, each a pass over the (tokens, hidden) activations. A LoRA run
freezes the norm weights, so backward needs only the input gradient

    dx = rstd * (gw - xhat * mean(gw * xhat)),    gw = g * weight,  xhat = x * rstd,

which :class:`FusedRmsNorm` computes in float32 from the saved input and the
(tokens, 1) ``rstd``. Measured on the 2-core dev CPU at the demo model's shape
(4 x 86 x 576, bf16, best of 7 x 200): forward + backward 923 us vs 1,481 us
for transformers' module with a frozen weight; the demo model has 61 norms.
The forward is the same arithmetic in the same order (bit-identical output);
the input gradient matches autograd's within float32 rounding (relative error
3e-5 on bf16 activations).

Installed only on the classes in :data:`NORM_CLASSES` (checked to have exactly
that forward), in training mode with gradients, on a CPU, for a frozen
weight; anything else runs the module's own forward. ``TrainConfig.fused_lora``
turns it off with the fused LoRA op.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

from .forward_patch import patched_forwards

# transformers' RMSNorm classes whose forward is exactly weight * (x.float() * rsqrt(mean(x^2) + eps)).to(x.dtype)
NORM_CLASSES = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "SmolLM3RMSNorm"})


@functools.cache
def fused_rms_norm_fn():
    """The :class:`FusedRmsNorm` autograd function, built on first use (torch is imported lazily)."""
    import torch

    class FusedRmsNorm(torch.autograd.Function):
        """RMSNorm of ``x`` scaled by a frozen ``weight`` (see the module docstring)."""

        @staticmethod
        def forward(ctx, x, weight, eps: float):
            xf = x.to(torch.float32)
            rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
            ctx.save_for_backward(x, rstd, weight)
            return weight * (xf * rstd).to(x.dtype)

        @staticmethod
        def backward(ctx, grad):
            x, rstd, weight = ctx.saved_tensors
            gw = (grad * weight).float()
            xhat = x.float().mul_(rstd)
            dot = (gw * xhat).mean(-1, keepdim=True)
            return gw.sub_(xhat.mul_(dot)).mul_(rstd).to(x.dtype), None, None

    return FusedRmsNorm


def _norm_forward(module, original, hidden_states):
    import torch

    if (not module.training or not torch.is_grad_enabled() or module.weight.requires_grad
            or hidden_states.device.type != "cpu"):
        return original(hidden_states)
    return fused_rms_norm_fn().apply(hidden_states, module.weight, float(module.variance_epsilon))


def _known_norm(module) -> bool:
    return (type(module).__name__ in NORM_CLASSES and hasattr(module, "variance_epsilon")
            and getattr(module, "weight", None) is not None)


@contextlib.contextmanager
def fused_rms_norm(model, enabled: bool = True) -> Iterator[int]:
    """Within the block, the model's known RMSNorm modules train through :class:`FusedRmsNorm`; yields how many."""
    with patched_forwards(model, _known_norm, _norm_forward, enabled) as switched:
        yield len(switched)
