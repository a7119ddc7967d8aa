"""Quantization fidelity of the loaded model: the QLoRA paper's Table 2 argument, on the user's weights.

For every weight the session stores in 4/8 bits, the original 16-bit tensor is
read back from the model folder's safetensors and quantized three ways with
blocks of 64: NF4 and FP4 through ``bitsandbytes.functional.quantize_4bit``
(the kernels the loader used) and a plain symmetric Int4 absmax reference
(``round(7·w/absmax)``). Each is dequantized and compared with the original
(relative MSE ``‖w−ŵ‖²/‖w‖²`` and mean absolute error), per layer and in total.
The 4-bit vs 16-bit perplexity (which loads a temporary 16-bit copy) is engine
work, in :mod:`qlora_nb.engine.model.quant_report`; the plots are in
:mod:`qlora_nb.views.quant_report`.

bitsandbytes' CPU quantizer is slow (seconds per million values on a busy
2-core machine), so by default each weight contributes its first ``sample``
values (whole rows, so whole 64-blocks): an unbiased per-layer estimate that
keeps the demo model's report under a minute. ``sample=None`` uses every value.
"""

from __future__ import annotations

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


def quantized_weight_names(model) -> list[str]:
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


def method_totals(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    norm = sum(r["_norm"] for r in rows) or 1.0
    count = sum(r["measured_values"] for r in rows) or 1
    return {m: {"rel_mse": sum(r[f"_{m}_sse"] for r in rows) / norm, "mae": sum(r[f"_{m}_sae"] for r in rows) / count}
            for m in METHODS}
