"""What each CPU step change buys: the change and what it replaced, alternated step by step in one process.

Run by ``run.py`` (CPU only) after the training rounds. Whole-run ratios
between fresh processes on a shared 2-core VM move by 10-20% from one minute
to the next (the same bf16 matmul measured 0.33 to 1.4 ms); alternating the
two variants on consecutive steps of one process, same model and data, and
taking the median of the per-pair ratios cancels most of that drift.

Each toggle swaps one piece of :mod:`qlora_nb.engine.speed.fused_lora_op` (or the
optimizer) for what it replaced, kept here as the reference:

* ``dropout_masks``: SFC64 draws seeded from torch's generator, applied as a
  compute-dtype 0/1 factor, vs ``torch.randint`` words (torch's mt19937)
  applied as a bool mask (type promotion) - the previous fused op's masks;
* ``kept_block_constants``: float32 double-quantization constants kept for the
  run vs bitsandbytes' ``dequantize_4bit`` re-deriving them on every call;
* ``fused_adamw``: torch's fused AdamW kernel vs the foreach AdamW the
  Trainer's ``adamw_torch`` uses;
* ``fused_rms_norm``: :mod:`qlora_nb.engine.speed.cpu_norm`'s RMSNorm vs
  transformers' own module.

The step is the toolkit's own training computation (``fused_lora`` and ``fused_rms_norm``,
``labelled_loss`` under bf16 autocast, backward, gradient clipping, AdamW),
written out so that a toggle can change between two steps.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from common import worker_main

TOGGLES = ("dropout_masks", "kept_block_constants", "fused_adamw", "fused_rms_norm")


def _previous_keep_mask(shape, p, device="cpu"):
    """The masks before this change: 16-bit decisions from torch.randint int64 words (torch's mt19937)."""
    import torch

    from qlora_nb.engine.speed.dropout_mask import drop_probability

    n = 1
    for d in shape:
        n *= d
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    mask = words.view(torch.int16)[:n].view(shape) >= round(p * 65536) - 32768
    return mask, 1.0 / (1.0 - drop_probability(p))


def _dequantize_every_call(self, base, dtype):
    """The weight as bitsandbytes' dequantize_4bit gives it, constants re-derived on every call."""
    import bitsandbytes.functional as bnbf

    qs = getattr(base.weight, "quant_state", None)
    w = base.weight if qs is None else bnbf.dequantize_4bit(base.weight.data, qs)
    return w if w.dtype == dtype else w.to(dtype)


def run(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    import qlora_nb
    from qlora_nb.data.collate import make_collator, tokenize_rows
    from qlora_nb.data.load import load_data
    from qlora_nb.data.validate import validate
    from qlora_nb.engine.speed import fused_lora_op
    from qlora_nb.engine.speed.cpu_norm import fused_rms_norm
    from qlora_nb.engine.speed.cpu_speed import fused_lora
    from qlora_nb.engine.training.loss import labelled_loss, training_attention

    session = qlora_nb.load(spec["model_path"], bits=4, device="cpu")
    model, tok = session.model, session.tokenizer
    text = validate(load_data(spec["data"]), None, tok)
    examples = tokenize_rows(text.rows, text.template, tok, int(spec["cutoff_len"]), True, text.chat_format).examples
    bs = int(spec["batch_size"])
    collate = make_collator(tok)
    batches = [collate(examples[i:i + bs]) for i in range(0, len(examples) - bs + 1, bs)]
    model.train()
    model.config.use_cache = False
    if attention := training_attention(model, "cpu", int(spec["cutoff_len"])):
        model.get_base_model().set_attn_implementation(attention)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizers = {True: torch.optim.AdamW(params, lr=1e-5, fused=True), False: torch.optim.AdamW(params, lr=1e-5)}
    originals = {"keep_mask": fused_lora_op.keep_mask, "mask_factor": fused_lora_op.mask_factor,
                 "weight": fused_lora_op.Absmax.weight}
    state = {"optimizer": optimizers[True]}

    norms: dict[Any, Any] = {}

    def use(toggle: str, new: bool) -> None:
        for module, forward in norms.items():
            module.forward = forward
        fused_lora_op.keep_mask = originals["keep_mask"]
        fused_lora_op.mask_factor = originals["mask_factor"]
        fused_lora_op.Absmax.weight = originals["weight"]
        state["optimizer"] = optimizers[True]
        if new:
            return
        if toggle == "dropout_masks":
            fused_lora_op.keep_mask = _previous_keep_mask
            fused_lora_op.mask_factor = lambda mask, dtype: mask
        elif toggle == "kept_block_constants":
            fused_lora_op.Absmax.weight = _dequantize_every_call
        elif toggle == "fused_adamw":
            state["optimizer"] = optimizers[False]
        elif toggle == "fused_rms_norm":
            for module in norms:
                module.__dict__.pop("forward", None)

    def step(batch) -> float:
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = labelled_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        state["optimizer"].step()
        state["optimizer"].zero_grad(set_to_none=True)
        return time.perf_counter() - t

    pairs = int(spec.get("pairs", 8))
    out: dict[str, Any] = {"contender": "ablation", "pairs": pairs, "toggles": {}}
    try:
        with fused_lora(model), fused_rms_norm(model):
            norms.update({m: m.__dict__["forward"] for m in model.modules() if "forward" in m.__dict__
                          and type(m).__name__.endswith("RMSNorm")})
            for b in batches[:2]:
                step(b)  # warm-up: kernel selection, first allocations
            k = 2
            for toggle in spec.get("toggles") or TOGGLES:
                times: dict[bool, list[float]] = {True: [], False: []}
                ratios = []
                for i in range(pairs):
                    b = batches[k % len(batches)]
                    k += 1
                    order = (True, False) if i % 2 == 0 else (False, True)  # each variant goes first half the time
                    got = {}
                    for new in order:
                        use(toggle, new)
                        got[new] = step(b)  # the same batch for both: same shapes, same work
                    times[True].append(got[True])
                    times[False].append(got[False])
                    ratios.append(got[False] / got[True])
                out["toggles"][toggle] = {"new_median_s": statistics.median(times[True]),
                                          "previous_median_s": statistics.median(times[False]),
                                          "speedup_median": statistics.median(ratios),
                                          "speedup_min": min(ratios), "speedup_max": max(ratios), "n": len(ratios)}
    finally:
        use("", True)
        norms.clear()
    return out


if __name__ == "__main__":
    worker_main(run)
