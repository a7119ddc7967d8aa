"""Cost of ``Session.compare`` (``%qlora_compare``) in a fresh process: memory delta and generation speed.

The adapter's LoRA B matrices are given small random values first, so the
adapter differs from the base and compare generates both columns (an
untrained adapter is shown as the base only). Memory: the ledger's weight and
adapter bytes before/after (a comparison must not copy weights: expected 0),
current RSS before/after, and growth of the process peak. Speed: generated
tokens/s of ``compare`` against plain ``model.generate`` on the same formatted
prompts, greedy, same ``max_new_tokens``, one prompt at a time (as compare
does), each column generated the same number of times; alternated ``reps``
times in this process and counted by the same decoder hook.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from common import TokenMeter, peak_rss_bytes, rss_now_bytes, worker_main


def _weights(session) -> dict[str, int]:
    led = session.ledger(measure=False).as_dict()
    return {k: led[k] for k in ("quantized_weights", "quant_constants", "other_weights", "adapters")}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    import qlora_nb

    session = qlora_nb.load(spec["model_path"], device=spec.get("device", "cpu"))
    torch.manual_seed(0)
    for name, p in session.model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0.0, 0.02)
    prompts = list(spec["prompts"])
    max_new = int(spec["max_new_tokens"])
    model = session.model
    gc.collect()
    before_w, before_rss, before_peak = _weights(session), rss_now_bytes(), peak_rss_bytes()
    meter = TokenMeter(model)
    t = time.perf_counter()
    result = session.compare(prompts, max_new_tokens=max_new)
    first_compare_s = time.perf_counter() - t
    gc.collect()
    after_w, after_rss, after_peak = _weights(session), rss_now_bytes(), peak_rss_bytes()
    columns = list(getattr(result, "columns", None) or ["base"])
    inputs = [session.tokenizer(r["formatted"], return_tensors="pt", add_special_tokens=False)["input_ids"]
              .to(session.device) for r in result]
    pad = session.tokenizer.pad_token_id

    def plain_generate() -> None:
        model.eval()
        with torch.no_grad():
            for ids in inputs:
                for col in columns:
                    if col == "base":
                        with model.disable_adapter():
                            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                                           do_sample=False, pad_token_id=pad)
                    else:
                        model.set_adapter(col)
                        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                                       do_sample=False, pad_token_id=pad)

    gen_ids = sum(len(r.get("base_ids") or []) + len(r.get("adapted_ids") or []) for r in result)
    timings: dict[str, list[float]] = {"compare": [], "generate": []}
    tokens: dict[str, list[int]] = {"compare": [], "generate": []}
    for _ in range(int(spec.get("reps", 2))):
        for kind in ("generate", "compare"):
            n0 = meter.gen_rows
            t = time.perf_counter()
            if kind == "compare":
                session.compare(prompts, max_new_tokens=max_new)
            else:
                plain_generate()
            timings[kind].append(time.perf_counter() - t)
            tokens[kind].append(meter.gen_rows - n0)
    meter.close()
    rates = {k: [n / s for n, s in zip(tokens[k], timings[k], strict=True)] for k in timings}
    return {
        "columns": columns, "prompts": len(prompts), "max_new_tokens": max_new,
        "weights_before": before_w, "weights_after": after_w,
        "weight_delta_bytes": sum(after_w.values()) - sum(before_w.values()),
        "rss_delta_bytes": after_rss - before_rss, "peak_rss_growth_bytes": after_peak - before_peak,
        "first_compare_seconds": first_compare_s, "generated_ids_in_result": gen_ids,
        "seconds": timings, "tokens": tokens, "tokens_per_s": rates,
    }


if __name__ == "__main__":
    worker_main(run)
