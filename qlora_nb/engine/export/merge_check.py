"""Merge verification: the saved folder must hold dequant(W) + scale*B@A and reproduce the adapter's logits.

Peer projects' worst merge bugs are silent: a merge into 4-bit weights that is
re-quantized away, or a saved base where the merged model was meant. So the
saved tensors are read back one at a time and checked against the adapter's own
numbers, then the folder is loaded with plain transformers and its logits are
compared with the adapter model and with the base on probe prompts. The merge
swaps the folder in only when both checks pass. A failed check raises; a passed
one returns its numbers as a :class:`MergeVerdict`, which the merge records.
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import QloraError
from ..model.adapters import with_adapter

if TYPE_CHECKING:
    from ..session import Session

# An fp32 merge must reproduce the adapter model's logits within this (the bar; measured: ~1e-6).
FP32_LOGIT_TOLERANCE = 1e-2
# Per-weight bound |saved - (W + scale*B@A)| <= EPS*(|W + dW| + |dW|) + FLOOR: peft's merge rounds twice (dW to
# the weight dtype, then the sum), each by at most 2**-p relative (p = significand bits: bf16 8, fp16 11); EPS is
# twice that. fp32 leaves room for a different matmul summation order.
WEIGHT_EPS = {"float32": 2.0**-20, "bfloat16": 2.0**-7, "float16": 2.0**-10}
WEIGHT_FLOOR = {"float32": 1e-7, "bfloat16": 1e-30, "float16": 1e-7}
# Every failed check starts with this, the fail twin of MergeResult.verdict()'s "merge verified: ..." line.
FAILED = "merge verification FAILED"


@dataclass
class MergeVerdict:
    """What the checks measured (field names as in :class:`~qlora_nb.engine.export.merge.MergeResult`)."""

    weight_max_error: float | None = None  # max |saved - (W + scale*B@A)| over the adapted matrices
    modules_checked: int = 0
    max_abs_diff: float | None = None  # logits: merged (reloaded) vs the adapter model, both at the merge dtype
    adapter_effect: float | None = None  # logits: adapter model vs base
    merged_vs_base: float | None = None
    effect_kept: float | None = None  # 1 - |merged - adapter| / |adapter - base| (Frobenius): 1 is a perfect merge
    max_abs_diff_session: float | None = None  # logits: merged vs the live session model (its compute dtype)
    warnings: list[str] = field(default_factory=list)


def verify_merge(session: Session, name: str, folder: Path, batch, ref_adapter, ref_base, *, dtype: str,
                 device: str, probes: list[str]) -> MergeVerdict:
    """Both checks on the saved ``folder``; raises a QloraError (``merge verification FAILED``) on the first miss."""
    verdict = check_merged_weights(session, name, folder, dtype)
    logits = check_merged_logits(session, name, folder, batch, ref_adapter, ref_base, dtype=dtype, device=device,
                                 probes=probes)
    logits.weight_max_error, logits.modules_checked = verdict.weight_max_error, verdict.modules_checked
    logits.warnings = verdict.warnings + logits.warnings
    return logits


def _encode(tokenizer, probes: list[str], device: str):
    enc = tokenizer(list(probes), return_tensors="pt", padding=True)
    return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}


def _logits(model, batch) -> Any:
    """fp32 logits at the real (non-padding) positions only."""
    import torch

    with torch.no_grad():
        out = model(**batch).logits.float()
    mask = batch["attention_mask"].bool()
    return out[mask].cpu()


def _session_logits(session: Session, adapter: str, probes: list[str]):
    """Logits of the live session model with ``adapter`` active; every flag is restored afterwards."""
    with with_adapter(session.model, adapter):
        return _logits(session.model, _encode(session.tokenizer, probes, session.device))


def _max_diff(a, b) -> float:
    return float((a - b).abs().max().item())


class _SavedTensors:
    """Read single tensors from a saved (possibly sharded) safetensors folder without loading the model."""

    def __init__(self, folder: Path) -> None:
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            self.files = {k: folder / v for k, v in json.loads(index.read_text())["weight_map"].items()}
        else:
            from safetensors import safe_open

            single = folder / "model.safetensors"
            with safe_open(str(single), framework="pt") as fh:
                self.files = dict.fromkeys(fh.keys(), single)

    def get(self, key: str):
        from safetensors import safe_open

        if key not in self.files:
            return None
        with safe_open(str(self.files[key]), framework="pt") as fh:
            return fh.get_tensor(key)


def _expected_delta(module, name: str, cfg):
    """scale * B @ A from the adapter's own numbers and config (independent of peft's merge code)."""
    import math

    a = module.lora_A[name].weight.detach().float().cpu()
    b = module.lora_B[name].weight.detach().float().cpu()
    r = a.shape[0]
    scale = cfg.lora_alpha / (math.sqrt(r) if cfg.use_rslora else r)
    delta = (b @ a) * scale
    return delta.T if getattr(cfg, "fan_in_fan_out", False) else delta


def check_merged_weights(session: Session, name: str, folder: Path, dtype: str) -> MergeVerdict:
    """Every adapted matrix in the saved folder must equal dequant(W) + scale*B@A within rounding, and not W.

    This is the exact test for the "merge did nothing" bug: it reads what was
    written, one tensor at a time, so it also catches a correct merge that was
    not the thing saved.
    """
    import torch
    from peft.utils.integrations import dequantize_bnb_weight

    from ..model.quantize import torch_dtype

    cfg = session.model.peft_config[name]
    if getattr(cfg, "use_dora", False):
        return MergeVerdict(warnings=["DoRA adapter: the per-weight check is skipped (logits are still compared)."])
    tdt = torch_dtype(dtype)
    saved = _SavedTensors(folder)
    changed, worst, checked, bad = 0, 0.0, 0, None
    for path, module in session.model.get_base_model().named_modules():
        if not hasattr(module, "lora_A") or name not in module.lora_A:
            continue
        key = f"{path}.weight"
        got = saved.get(key)
        if got is None:
            raise QloraError(f"the merged folder has no tensor {key!r}.", where=FAILED,
                             hint="Nothing was saved. This is a bug; rerun with --debug and report it.")
        base_w = module.get_base_layer().weight
        state = getattr(module.get_base_layer(), "state", None)
        w = (dequantize_bnb_weight(base_w, state=state) if type(base_w).__name__ in ("Params4bit", "Int8Params")
             else base_w.detach()).float().cpu()
        delta = _expected_delta(module, name, cfg)
        expected = w + delta
        got = got.float()
        err = (got - expected).abs()
        bound = WEIGHT_EPS[dtype] * (expected.abs() + delta.abs()) + WEIGHT_FLOOR[dtype]
        if bad is None and (err > bound).any():
            bad = (key, err.max().item())
        worst = max(worst, err.max().item())
        changed += int(not torch.equal(got, w.to(tdt).float()))
        checked += 1
    if checked and not changed:
        lost = (" In 16-bit, updates smaller than the weights' rounding step vanish; merge with --dtype fp32."
                if dtype != "float32" else "")
        raise QloraError(f"the merged model equals the base model: none of the {checked} adapted matrices changed "
                         "(the merge did nothing).", where=FAILED, hint="Nothing was saved." + lost)
    if bad is not None:
        raise QloraError(f"merged weight {bad[0]} differs from W + scale*B@A by up to {bad[1]:.3g}, more than "
                         f"{dtype} rounding allows.", where=FAILED,
                         hint="Nothing was saved. Check the adapter's scaling (alpha/r) and rerun with --debug.")
    return MergeVerdict(weight_max_error=worst, modules_checked=checked)


def check_merged_logits(session: Session, name: str, folder: Path, batch, ref_adapter, ref_base, *, dtype: str,
                        device: str, probes: list[str]) -> MergeVerdict:
    """Reload the folder with plain transformers; compare its logits with the adapter model and the base."""
    from transformers import AutoModelForCausalLM

    from ..model.quantize import torch_dtype

    reloaded = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch_dtype(dtype), device_map={"": device},
                                                    use_safetensors=True)
    reloaded.eval()
    merged = _logits(reloaded, batch)
    del reloaded
    gc.collect()
    v = MergeVerdict(max_abs_diff=_max_diff(merged, ref_adapter), adapter_effect=_max_diff(ref_adapter, ref_base),
                     merged_vs_base=_max_diff(merged, ref_base),
                     max_abs_diff_session=_max_diff(merged, _session_logits(session, name, probes)))
    effect_norm = float((ref_adapter - ref_base).norm())
    v.effect_kept = 1.0 - float((merged - ref_adapter).norm()) / effect_norm if effect_norm else 1.0
    if v.adapter_effect > 0 and v.merged_vs_base <= 1e-3 * v.adapter_effect:
        raise QloraError(f"the merged model's logits equal the base model's (max difference {v.merged_vs_base:.3g}"
                         f", while the adapter changes them by up to {v.adapter_effect:.3g}): the merge did "
                         "nothing.", where=FAILED, hint="Nothing was saved.")
    if dtype == "float32" and v.max_abs_diff > FP32_LOGIT_TOLERANCE:
        raise QloraError(f"max |Δlogit| {v.max_abs_diff:.1e} > {FP32_LOGIT_TOLERANCE:.0e} on "
                         f"{len(probes)} prompts: the float32 merged model's logits differ from the adapter "
                         "model's.",
                         where=FAILED, hint="Nothing was saved. Rerun with --debug and report it.")
    if v.effect_kept < 0.5:
        v.warnings.append(
            f"the {dtype} merged model reproduces only {v.effect_kept:.0%} of the adapter's effect on the "
            "probes: rounding W + scale*B@A (and the matmuls) to 16 bits loses small updates. Merge with --dtype fp32 "
            "for an exact copy.")
    return v
