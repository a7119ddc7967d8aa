"""Quantization fidelity of the loaded model: the QLoRA paper's Table 2 argument, on the user's weights.

For every weight the session stores in 4/8 bits, the original 16-bit tensor is
read back from the model folder's safetensors and quantized three ways with
blocks of 64: NF4 and FP4 through ``bitsandbytes.functional.quantize_4bit``
(the kernels the loader used) and a plain symmetric Int4 absmax reference
(``round(7·w/absmax)``). Each is dequantized and compared with the original
(relative MSE ``‖w−ŵ‖²/‖w‖²`` and mean absolute error), per layer and in total.
Then the held-out perplexity of the session's quantized base (adapters off) is
measured against a temporary 16-bit copy on a text sample shipped with the
package; the copy is freed afterwards.

bitsandbytes' CPU quantizer is slow (seconds per million values on a busy
2-core machine), so by default each weight contributes its first ``sample``
values (whole rows, so whole 64-blocks): an unbiased per-layer estimate that
keeps the demo model's report under a minute. ``sample=None`` uses every value.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import QloraError

METHODS = ("nf4", "fp4", "int4")
BLOCK = 64


def sample_text() -> str:
    return (Path(__file__).with_name("sample_text.txt")).read_text(encoding="utf-8")


@dataclass
class QuantReport:
    """Per-layer reconstruction errors, totals per method, and 4-bit vs 16-bit perplexity."""

    model: str
    rows: list[dict[str, Any]]
    totals: dict[str, dict[str, float]]
    perplexity: dict[str, float]
    text_tokens: int
    sampled: int | None
    seconds: float
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "rows": [dict(r) for r in self.rows], "totals": dict(self.totals),
                "perplexity": dict(self.perplexity), "text_tokens": self.text_tokens, "sampled": self.sampled,
                "seconds": self.seconds, "notes": list(self.notes)}

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.rows)

    def figures(self) -> dict[str, Any]:
        from ..views.quant_report import report_figures

        return report_figures(self)

    def __str__(self) -> str:
        lines = [f"quantization fidelity of {self.model} ({len(self.rows)} weights"
                 + (f", first {self.sampled:,} values each" if self.sampled else "") + ")"]
        for m in METHODS:
            t = self.totals.get(m, {})
            lines.append(f"  {m:<5} relative MSE {t.get('rel_mse', float('nan')):.5f}   "
                         f"mean |error| {t.get('mae', float('nan')):.3e}")
        for k, v in self.perplexity.items():
            lines.append(f"  perplexity {k:<14} {v:.3f}")
        lines.append(f"  on {self.text_tokens} held-out tokens, {self.seconds:.1f} s")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(str(self))


def int4_absmax(w, block: int = BLOCK):
    """Symmetric Int4 with one absmax per block: the QLoRA paper's Int4 baseline."""
    import torch

    flat = w.reshape(-1).float()
    pad = (-flat.numel()) % block
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    blocks = flat.view(-1, block)
    absmax = blocks.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
    q = torch.round(blocks / absmax * 7).clamp(-7, 7)
    return (q * absmax / 7).reshape(-1)[: w.numel()].view_as(w)


def reconstruct(w, method: str):
    """``w`` quantized with ``method`` (nf4/fp4 via bitsandbytes, int4 reference) and dequantized, fp32."""
    if method == "int4":
        return int4_absmax(w)
    import bitsandbytes.functional as bnbf

    q, state = bnbf.quantize_4bit(w.contiguous(), blocksize=BLOCK, quant_type=method)
    return bnbf.dequantize_4bit(q, state, quant_type=method).float().view_as(w)


def _quantized_weight_names(model) -> list[str]:
    """Checkpoint names ('model.layers.0.self_attn.q_proj.weight') of the weights the session quantized."""
    from .ledger import is_quantized

    names = []
    for name, p in model.named_parameters():
        if is_quantized(p):
            key = name.replace("base_model.model.", "", 1).replace(".base_layer", "")
            names.append(key)
    return names


def _layer_index(name: str) -> int:
    parts = name.split(".")
    for a, b in zip(parts, parts[1:], strict=False):
        if a == "layers" and b.isdigit():
            return int(b)
    return -1


def weight_errors(model_path: Path, names: list[str], sample: int | None) -> list[dict[str, Any]]:
    """Per weight: relative MSE and mean |error| of each method against the original 16-bit tensor."""
    import torch
    from safetensors import safe_open

    files = sorted(Path(model_path).glob("*.safetensors"))
    if not files:
        raise QloraError(f"{model_path} has no .safetensors to read the original weights from.",
                         where="quant_report", hint="The report needs the 16-bit checkpoint the session loaded.")
    where: dict[str, Path] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for k in fh.keys():
                where[k] = f
    samples, rows = [], []
    for name in names:
        if name not in where:
            continue
        with safe_open(str(where[name]), framework="pt") as fh:
            w = fh.get_tensor(name)
        numel = w.numel()
        if sample and numel > sample:
            w = w[: max(1, sample // w.shape[-1])]
        samples.append(w.reshape(-1))
        rows.append({"name": name, "layer": _layer_index(name), "kind": name.split(".")[-2], "numel": numel,
                     "measured_values": w.numel()})
    if not rows:
        return rows
    # One bitsandbytes call per method over all weights (each padded with zeros to whole 64-blocks, which
    # leaves every block's absmax, and so its codes, exactly as quantizing the weight alone would).
    padded = [torch.cat([t, t.new_zeros((-t.numel()) % BLOCK)]) for t in samples]
    flat = torch.cat(padded)
    flat32 = flat.float()
    recon = {m: reconstruct(flat, m) for m in METHODS}
    offset = 0
    for row, t, p in zip(rows, samples, padded, strict=True):
        orig = flat32[offset: offset + t.numel()]
        norm = float((orig ** 2).sum()) or 1.0
        row["_norm"] = norm
        for m in METHODS:
            err = recon[m][offset: offset + t.numel()] - orig
            sse = float((err ** 2).sum())
            row[f"{m}_rel_mse"] = sse / norm
            row[f"{m}_mae"] = float(err.abs().mean())
            row[f"_{m}_sse"] = sse
            row[f"_{m}_sae"] = float(err.abs().sum())
        offset += p.numel()
    return rows


def _totals(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    norm = sum(r["_norm"] for r in rows) or 1.0
    count = sum(r["measured_values"] for r in rows) or 1
    return {m: {"rel_mse": sum(r[f"_{m}_sse"] for r in rows) / norm, "mae": sum(r[f"_{m}_sae"] for r in rows) / count}
            for m in METHODS}


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

    from ..engine.quantize import torch_dtype
    from ..engine.session import _quiet_libraries

    cfg = session.config
    with _quiet_libraries():
        return AutoModelForCausalLM.from_pretrained(str(session.model_path), dtype=torch_dtype(cfg.compute_dtype),
                                                    device_map={"": session.device}, use_safetensors=True,
                                                    trust_remote_code=cfg.trust_remote_code)


def quant_report(session, *, sample: int | None = 65536, text: str | None = None, max_tokens: int = 512,
                 perplexity_check: bool = True) -> QuantReport:
    """Reconstruction error of NF4/FP4/Int4 per layer and in total, and 4-bit vs 16-bit perplexity."""
    from ..engine.quantize import guard_cpu_repack

    if sample is not None and sample < BLOCK:
        raise QloraError(f"sample={sample} is smaller than one block of {BLOCK}.", where="quant_report sample",
                         hint="Use sample=None (every value) or at least 64.")
    started = time.perf_counter()
    names = _quantized_weight_names(session.model)
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
    totals = _totals(rows)
    ppl: dict[str, float] = {}
    n_tokens = 0
    if perplexity_check:
        body = text if text is not None else sample_text()
        label = f"{session.config.bits}-bit" + (f" {session.config.quant}" if session.config.bits == 4 else "")
        model = session.model
        was_training = model.training
        model.eval()
        guard_cpu_repack(model)
        try:
            with model.disable_adapter():
                ppl[label], n_tokens = perplexity(model, session.tokenizer, body, max_tokens)
        finally:
            guard_cpu_repack(model)
            model.train(was_training)
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
