"""4-bit vs 16-bit perplexity and the report that puts it beside the reconstruction errors.

The per-weight NF4/FP4/Int4 errors are pure tensor work (:mod:`qlora_nb.memory.quant_report`);
this module does the engine's part: it measures the session's quantized base
(adapters off, every flag restored) and a temporary 16-bit copy on a text sample
shipped with the package, and frees the copy afterwards.
"""

from __future__ import annotations

import gc
import math
import time

from ...command_options import QuantReportOptions
from ...errors import QloraError
from ...memory.quant_report import (
    BLOCK,
    QuantReport,
    method_totals,
    quantized_weight_names,
    sample_text,
    weight_errors,
)
from .adapters import BASE, with_adapter


def perplexity(model, tokenizer, text: str, max_tokens: int, window: int = 256) -> tuple[float, int]:
    """exp(mean next-token NLL) over non-overlapping windows of the text (at most ``max_tokens`` tokens)."""
    import torch

    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0][:max_tokens]
    if ids.numel() < 2:
        raise QloraError("the perplexity text has fewer than two tokens.", where="quant_report text")
    device = next(p.device for p in model.parameters() if p.device.type != "meta")
    nll, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, ids.numel() - 1, window):
            chunk = ids[start:start + window + 1].unsqueeze(0).to(device)
            if chunk.shape[1] < 2:
                break
            logits = model(input_ids=chunk[:, :-1]).logits.float()
            loss = torch.nn.functional.cross_entropy(logits[0], chunk[0, 1:], reduction="sum")
            nll += float(loss)
            count += chunk.shape[1] - 1
    return math.exp(nll / count), count


def _load_16bit(session):
    from transformers import AutoModelForCausalLM

    from ...quiet import quiet_libraries
    from .quantize import torch_dtype

    cfg = session.config
    with quiet_libraries():
        return AutoModelForCausalLM.from_pretrained(str(session.model_path), dtype=torch_dtype(cfg.compute_dtype),
                                                    device_map={"": session.device}, use_safetensors=True,
                                                    trust_remote_code=cfg.trust_remote_code)


def quant_report(session, *, sample: int | None = QuantReportOptions.sample, text: str | None = None,
                 max_tokens: int = QuantReportOptions.max_tokens,
                 perplexity_check: bool = QuantReportOptions.perplexity) -> QuantReport:
    """Reconstruction error of NF4/FP4/Int4 per layer and in total, and 4-bit vs 16-bit perplexity."""
    if sample is not None and sample < BLOCK:
        raise QloraError(f"sample={sample} is smaller than one block of {BLOCK}.", where="quant_report sample",
                         hint="Use sample=None (every value) or at least 64.")
    started = time.perf_counter()
    names = quantized_weight_names(session.model)
    notes = []
    if not names:  # a 16-bit session: report on its linear weights as they would be quantized
        names = [n.replace("base_model.model.", "", 1).replace(".base_layer", "")
                 for n, m in session.model.named_modules() if n.endswith("base_layer") and hasattr(m, "weight")]
        names = [n + ".weight" for n in names]
        notes.append("the session's base is 16-bit: errors show what 4-bit storage would cost")
    rows = weight_errors(session.model_path, names, sample)
    if not rows:
        raise QloraError("none of the session's quantized weights were found in its safetensors.",
                         where="quant_report", hint=f"Checked {session.model_path}.")
    totals = method_totals(rows)
    ppl: dict[str, float] = {}
    n_tokens = 0
    if perplexity_check:
        body = text if text is not None else sample_text()
        label = f"{session.config.bits}-bit" + (f" {session.config.quant}" if session.config.bits == 4 else "")
        with with_adapter(session.model, BASE):
            ppl[label], n_tokens = perplexity(session.model, session.tokenizer, body, max_tokens)
        if session.config.bits != 16:
            ref = _load_16bit(session)
            ref.eval()
            try:
                ppl["16-bit"], _ = perplexity(ref, session.tokenizer, body, max_tokens)
            finally:
                del ref
                gc.collect()
    for r in rows:
        for k in [k for k in r if k.startswith("_")]:
            del r[k]
    return QuantReport(session.config.model, rows, totals, ppl, n_tokens, sample, time.perf_counter() - started,
                       notes)
