"""The training loss computed only where there are labels, and the attention kernel used for training.

With ``completion_only`` (the default) most positions of an instruction row are
prompt tokens whose label is -100. A causal LM's own forward still projects
every position onto the whole vocabulary (49k columns for SmolLM2) and takes a
float32 log-softmax of it, and backward does the same again, only for those
rows to be ignored. :func:`labelled_loss` passes the labelled positions as a
boolean ``logits_to_keep`` mask (transformers slices the hidden states before
``lm_head``; ``slice_logits_to_keep`` accepts a mask since 5.x) and applies
cross entropy to those logits alone. The loss is the model's own (shifted labels, the sum
over labelled tokens divided by their count, or by ``num_items_in_batch``
across an accumulated batch), so the gradients are the same; only the wasted
work and the float32 logits of prompt tokens are gone.

It is used where the model's forward is known to be "decoder, then
``lm_head``, then cross entropy" with nothing in between (no logit scaling or
soft-capping, no auxiliary loss); anything else takes the model's own forward.
"""

from __future__ import annotations

from typing import Any

from ...data.collate import IGNORE

# Causal LMs whose forward is exactly lm_head(decoder(...)): no logit scale, soft-cap or auxiliary (router) loss.
PLAIN_HEAD_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "olmo", "olmo2",
                                    "smollm3", "stablelm", "starcoder2"})

# On a CPU, for short rows, eager attention trains faster than the SDPA kernel (measured on the demo
# model, batch 4 of ~80 tokens: 1.35 vs 1.62 s/step); eager keeps each layer's (batch, heads, L, L)
# probabilities for backward, so it is used only up to this many tokens per row.
CPU_EAGER_ATTENTION_MAX_LEN = 256


def _causal_lm(model: Any) -> Any:
    """The transformers causal LM inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports_labelled_loss(model: Any) -> bool:
    """Whether :func:`labelled_loss` computes exactly what ``model(**inputs, labels=...)`` would."""
    base = _causal_lm(model)
    cfg = getattr(base, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in PLAIN_HEAD_MODEL_TYPES:
        return False
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        return False
    from transformers import modeling_utils

    return hasattr(modeling_utils, "slice_logits_to_keep")  # the helper that takes a boolean position mask


def labelled_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None):
    """Causal-LM cross entropy over the labelled positions only (see the module docstring).

    ``num_items_in_batch``: the labelled-token count of the whole accumulated batch
    (the Trainer's gradient-accumulation fix); None divides by this micro-batch's count.
    """
    import torch
    import torch.nn.functional as F

    labels = inputs["labels"]
    kwargs = {k: v for k, v in inputs.items() if k != "labels"}
    targets = labels[:, 1:]
    keep = targets != IGNORE
    positions = F.pad(keep, (0, 1), value=False)  # position i predicts label i+1; the last predicts nothing
    logits = model(**kwargs, use_cache=False, logits_to_keep=positions).logits.float()  # (labelled tokens, vocab)
    loss = F.cross_entropy(logits, targets[keep], reduction="sum")
    denom = num_items_in_batch if num_items_in_batch is not None else keep.sum().clamp(min=1)
    if isinstance(denom, torch.Tensor):
        denom = denom.to(loss.device)
    return loss / denom


def training_attention(model: Any, device: str, cutoff_len: int) -> str | None:
    """The attention implementation to train with, or None to keep the model's (see the constant above)."""
    base = _causal_lm(model)
    current = getattr(getattr(base, "config", None), "_attn_implementation", None)
    if str(device).startswith("cuda") or current != "sdpa" or cutoff_len > CPU_EAGER_ATTENTION_MAX_LEN:
        return None
    return "eager"
