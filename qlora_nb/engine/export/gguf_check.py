"""Load a written GGUF back with transformers and compare it with the adapted session.

Three things must survive the trip, each checked on the file itself (a
base-only file is compared with the session's base, adapters off):
the weights (logits on probe prompts against the live session with the adapter
active, and against the base so an export that lost the adapter is caught), the
tokenizer (the same ids for the probes), and the chat template and EOS id
(the usual cause of "the exported model talks gibberish").

Bars: the comparison is against the session's own forward over its NF4
weights. With an fp32-compute session an f32 file must match within the
merge's 1e-2 (measured 8e-5 on SmolLM2-135M); the rounding of the other types is
judged relative to the largest logit (measured on SmolLM2-135M, logits up to 36:
bf16 0.24, q8_0 0.77, against bars of 5% = 1.8). A bf16-compute session rounds
its own forward (measured 2.1 against the exact f32 file), so there every type
gets a 10% bar plus top-1 agreement of at least 80% (measured 91-95%).
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import QloraError
from ..model.adapters import BASE, with_adapter
from .merge_check import FP32_LOGIT_TOLERANCE, _encode, _logits, _max_diff

if TYPE_CHECKING:
    from ..session import Session
    from .gguf_export import GGUFResult

FAILED = "GGUF verification FAILED"
# max |Δlogit| / max |logit| allowed, per output type (rounding of the weights written, plus the session's own
# 16-bit compute when it has one). q8_0 is also held to top-1 agreement.
RELATIVE_BAR = {"f32": 2e-3, "bf16": 5e-2, "f16": 1e-2, "q8_0": 5e-2}
SESSION_16BIT_BAR = 0.1  # a bf16/fp16-compute session's own rounding dominates every type (measured: 0.05 on SmolLM2)
TOP1_BAR = 0.9  # fp32 session: measured 100% on SmolLM2-135M at q8_0
TOP1_BAR_16BIT = 0.8  # bf16 session: its own rounding flips near-ties (measured 91-95% against an exact f32 file)


def load_back(folder: Path, filename: str):
    """(model in fp32, tokenizer) read from the GGUF by transformers, as a user of the file would."""
    import torch
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ...quiet import quiet_libraries

    bar = gguf_utils.tqdm  # a plain tqdm.auto bar that transformers' progress switch does not reach
    gguf_utils.tqdm = lambda items, **_: items
    try:
        with quiet_libraries(("transformers",)):
            model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=filename, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=filename)
    finally:
        gguf_utils.tqdm = bar
    model.eval()
    return model, tokenizer


def check_gguf(session: Session, adapter: str, folder: Path, filename: str, result: GGUFResult) -> None:
    """Fill ``result``'s figures; raise one "GGUF verification FAILED" error naming the file when a check fails."""
    path = result.file  # the final name, the one the user knows (the file is still in the temporary folder)
    batch = _encode(session.tokenizer, result.probes, "cpu")
    with with_adapter(session.model, adapter):
        ref = _logits(session.model, {k: v.to(session.device) for k, v in batch.items()})
    with with_adapter(session.model, BASE):
        base = _logits(session.model, {k: v.to(session.device) for k, v in batch.items()})
    try:
        model, tokenizer = load_back(folder, filename)
    except Exception as exc:  # noqa: BLE001 - any failure to read the file back is the verdict
        raise QloraError(f"transformers could not load {path} back ({type(exc).__name__}: {str(exc)[:300]}).",
                         where=FAILED, hint="Nothing was kept under that name. Rerun with --debug and report it.") \
            from None
    got = _logits(model, batch)
    del model
    gc.collect()
    result.max_abs_diff = _max_diff(got, ref)
    result.logit_scale = float(ref.abs().max())
    result.adapter_effect = _max_diff(ref, base)
    result.top1_agreement = float((got.argmax(-1) == ref.argmax(-1)).float().mean())
    result.tokens_match = _same_ids(session.tokenizer, tokenizer, result.probes)
    result.template_match = (tokenizer.chat_template or None) == (session.tokenizer.chat_template or None)
    result.eos_match = tokenizer.eos_token_id == session.tokenizer.eos_token_id
    _judge(session, path, result, got, base)


def _same_ids(mine, theirs, probes: list[str]) -> bool:
    return all(mine(p)["input_ids"] == theirs(p)["input_ids"] for p in probes)


def relative_bar(session: Session, outtype: str) -> float:
    compute16 = getattr(session.config, "compute_dtype", "float32") != "float32"
    return max(RELATIVE_BAR[outtype], SESSION_16BIT_BAR if compute16 else 0.0)


def _judge(session: Session, path: Path, result: GGUFResult, got, base) -> None:
    problems = []
    if not result.tokens_match:
        problems.append("the re-loaded tokenizer splits the probe prompts into different ids")
    if not result.template_match:
        problems.append("the chat template did not round-trip")
    if not result.eos_match:
        problems.append("the EOS id did not round-trip")
    bar = relative_bar(session, result.outtype) * result.logit_scale
    if result.outtype == "f32" and relative_bar(session, "f32") == RELATIVE_BAR["f32"]:
        bar = FP32_LOGIT_TOLERANCE  # an fp32 session and an f32 file: the merge's own absolute bar
    if result.max_abs_diff > bar:
        problems.append(f"max |Δlogit| {result.max_abs_diff:.3g} against the adapted session is above the "
                        f"{result.outtype} bar {bar:.3g}")
    to_base = _max_diff(got, base)
    if result.adapter_effect > bar and to_base < result.max_abs_diff:
        problems.append(f"the file is closer to the base model ({to_base:.3g}) than to the adapter "
                        f"({result.max_abs_diff:.3g}): the adapter was lost")
    compute16 = relative_bar(session, "f32") > RELATIVE_BAR["f32"]
    top1 = TOP1_BAR_16BIT if compute16 else TOP1_BAR
    if (result.outtype == "q8_0" or compute16) and result.top1_agreement < top1:
        problems.append(f"top-1 tokens agree on only {result.top1_agreement:.0%} of positions (bar {top1:.0%})")
    if problems:
        raise QloraError(f"{path}: " + "; ".join(problems) + ".", where=FAILED,
                         hint=f"Nothing was kept: {path} was not written. Rerun with --debug and report it.")


def verdict_figures(result: Any) -> str:
    n = len(result.probes)
    top1 = f", top-1 agreement {result.top1_agreement:.1%}" if result.outtype == "q8_0" else ""
    against = (f"vs the session's base (adapters off) on {n} prompts (logits up to {result.logit_scale:.3g})"
               if getattr(result, "base_only", False) else
               f"vs the adapted session on {n} prompts (logits up to {result.logit_scale:.3g}; the adapter moves "
               f"them by up to {result.adapter_effect:.2g})")
    return (f"max |Δlogit| {result.max_abs_diff:.2g} {against}"
            f"{top1}; chat template {'✓' if result.template_match else '✗'}, EOS id "
            f"{'✓' if result.eos_match else '✗'}, tokenizer {'✓' if result.tokens_match else '✗'}")
