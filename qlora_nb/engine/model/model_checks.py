"""The model's kind and the LoRA settings checked before any work, so user mistakes are named.

(Truncated weight files are found by :mod:`qlora_nb.weightfiles`.)

* An encoder-only (BERT-style masked LM) or encoder-decoder model is refused by
  its config: ``AutoModelForCausalLM`` would wrap BERT in ``BertLMHeadModel``
  and fail much later, deep inside training.
* Every named LoRA target must match a module (peft silently skips the names
  that match nothing as long as one matches), and a rank larger than the
  smallest adapted dimension is warned about: LoRA's update cannot have a
  higher rank than that dimension, so the extra rank only costs memory.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ...errors import QloraError, QloraWarning, close_matches


def check_model_kind(hf_cfg: Any, path: Path) -> None:
    """Refuse encoder-only and encoder-decoder models: they have no causal (decoder) language-model head."""
    archs = [str(a) for a in (getattr(hf_cfg, "architectures", None) or [])]
    model_type = getattr(hf_cfg, "model_type", "?")
    encoder_heads = ("ForMaskedLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering",
                     "ForPreTraining", "ForMultipleChoice")
    if getattr(hf_cfg, "is_encoder_decoder", False):
        kind = "an encoder-decoder (sequence-to-sequence) model"
    elif archs and all(a.endswith(encoder_heads) for a in archs) and not getattr(hf_cfg, "is_decoder", False):
        kind = "an encoder-only model"
    else:
        return
    raise QloraError(f"{path} holds {model_type!r} ({', '.join(archs) or 'no architectures listed'}), {kind}.",
                     where="MODEL", hint="qlora_nb fine-tunes decoder (causal) language models such as Llama, "
                                         "Qwen, Mistral or SmolLM2; pass one of those.")


def linear_module_names(model) -> list[str]:
    return [n for n, m in model.named_modules() if n and ("Linear" in type(m).__name__ or type(m).__name__ == "Conv1D")]


def check_targets(model, targets: list[str]) -> None:
    """Every named target must match a module, the way peft matches (the name or its dotted suffix)."""
    if targets in (["all-linear"], "all-linear"):
        return
    names = [n for n, _ in model.named_modules() if n]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if not missing:
        return
    leaves = sorted({n.rsplit(".", 1)[-1] for n in linear_module_names(model)})
    parts = []
    for t in missing:
        near = close_matches(t, leaves)
        parts.append(repr(t) + (f" (did you mean {' or '.join(map(repr, near))}?)" if near else ""))
    raise QloraError(f"LoRA target(s) {', '.join(parts)} match no module of this model; the others would be "
                     "adapted without them.", where="load option 'targets'",
                     hint=f"Use 'all-linear' or names from: {', '.join(leaves)}.")


def warn_rank(peft_model, r: int, adapter: str) -> int | None:
    """Warn when ``r`` exceeds the smallest dimension of an adapted layer; returns that dimension."""
    dims = []
    for _, m in peft_model.named_modules():
        if adapter in getattr(m, "lora_A", {}):
            a, b = m.lora_A[adapter], m.lora_B[adapter]
            dims.append(min(getattr(a, "in_features", r), getattr(b, "out_features", r)))
    smallest = min(dims, default=None)
    if smallest is not None and r > smallest:
        params = sum(p.numel() for n, p in peft_model.named_parameters()
                     if "lora_" in n and f".{adapter}." in f"{n}.")
        at_smallest = params * smallest // r  # LoRA parameters grow linearly with r
        warnings.warn(f"LoRA rank r={r} is larger than the smallest adapted dimension ({smallest}); the update of "
                      f"such a layer cannot have rank above {smallest}, so the extra rank only costs memory: r={r} "
                      f"means {params:,} trainable parameters ({params * 4 / 2**20:,.1f} MiB in fp32, before "
                      f"gradients and optimizer state), against {at_smallest:,} at r={smallest}. "
                      f"Use --r {smallest} or less.", QloraWarning, stacklevel=3)
    return smallest
