"""The roofline of a training step: the machine's matmul peak, the step's model FLOPs, MFU, and a per-op profile.

Run by ``run.py`` as a worker in its own process (like the other workers),
after the training rounds, with the toolkit's settings (4-bit, same data,
batch, cutoff_len, seed). It

* times ``F.linear`` in bf16 and fp32 at the model's own linear shapes
  (``qlora_nb.engine.forecast.flops.matmul_peak``, best of many calls per shape);
* trains the toolkit's steps with ``Session.train``, counting each step's
  model FLOPs (``qlora_nb.engine.forecast.flops``: frozen linears forward + input
  gradient, LoRA forward/backward, attention, output layer on labelled
  positions only);
* records one steady step (step 2) with ``torch.profiler`` and keeps the top
  ops by self CPU time.

:func:`summary` turns that into the results' top-level ``"roofline"`` object;
its ``mfu`` uses the median steady step time of the toolkit runs of the same
suite (the profiled run's own steps are slowed by the profiler around step 2).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from common import TokenMeter, worker_main

TOP_OPS = 15


def _profile_table(prof) -> list[dict[str, Any]]:
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    # ProfilerStep*'s self time is what no op claims: Python, the Trainer loop, hooks
    return [{"op": "(no op: Python, Trainer loop)" if e.key.startswith("ProfilerStep") else e.key, "share": e.self_cpu_time_total / total, "self_seconds": e.self_cpu_time_total / 1e6,
             "calls": e.count} for e in events[:TOP_OPS]]


def run(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    import qlora_nb
    from qlora_nb.engine.forecast.flops import flops_model, matmul_peak

    device = spec.get("device", "cpu")
    session = qlora_nb.load(spec["model_path"], bits=int(spec.get("bits", 4)), device=device)
    fm = flops_model(session.model)
    seconds = float(spec.get("peak_seconds", 2.0))
    tokens = int(spec.get("peak_tokens", 320))
    peaks = {dt: matmul_peak(fm.shapes, dt, device, tokens=tokens, seconds=seconds, cache=False) for dt in ("bfloat16", "float32")}

    meter = TokenMeter(session.model)
    holder: dict[str, Any] = {"steps": []}
    prof = profile(activities=[ProfilerActivity.CPU], schedule=schedule(wait=0, warmup=1, active=1, repeat=1),
                   on_trace_ready=lambda p: holder.__setitem__("ops", _profile_table(p)))

    def on_event(event: dict[str, Any]) -> None:
        if event.get("kind") == "step":
            meter.step_end()
            holder["steps"].append(event)
            prof.step()

    unsubscribe = session.events.subscribe(on_event)
    options = {"max_steps": int(spec["steps"]), "batch_size": int(spec["batch_size"]),
               "cutoff_len": int(spec["cutoff_len"]), "val_split": 0, "n_probes": 0, "output_dir": spec["work_dir"],
               "overwrite": True, "seed": int(spec.get("seed", 42)), "peak_flops": peaks["bfloat16"]}
    prof.start()
    t0 = time.perf_counter()
    result = session.train(data=spec["data"], **options)
    train_seconds = time.perf_counter() - t0
    prof.stop()
    unsubscribe()
    meter.close()
    steps = int(result.metrics.get("steps") or 0)
    ends = [t for t, _ in meter.step_ends]
    unprofiled = [b - a for i, (a, b) in enumerate(zip(ends, ends[1:], strict=False)) if i != 0]  # i=0: step 2
    step_flops = result.metrics["train_flops"] / steps if steps else None
    return {
        "contender": "roofline", "threads": torch.get_num_threads(), "peak_tokens": tokens,
        "peak_bf16_flops": peaks["bfloat16"], "peak_fp32_flops": peaks["float32"],
        "shapes": [list(s) for s in fm.shapes], "step_flops": step_flops, "steps": steps,
        "step_seconds_unprofiled": statistics.median(unprofiled) if unprofiled else None,
        "event_mfu": [e.get("mfu") for e in holder["steps"]], "profile": holder.get("ops", []),
        "profiled_step": 2, "train_call_seconds": train_seconds, "throughput": meter.summary(),
    }


def summary(roofline_run: dict[str, Any] | None, toolkit_step_seconds: float | None) -> dict[str, Any] | None:
    """The results' ``"roofline"`` object from the roofline worker and the toolkit's median steady step time."""
    if not roofline_run or not roofline_run.get("ok"):
        return None
    r = roofline_run
    step_s = toolkit_step_seconds or r.get("step_seconds_unprofiled")
    achieved = r["step_flops"] / step_s if r.get("step_flops") and step_s else None
    peak = r.get("peak_bf16_flops")
    return {"peak_bf16_flops": peak, "peak_fp32_flops": r.get("peak_fp32_flops"), "step_flops": r.get("step_flops"),
            "step_seconds": step_s,
            "step_seconds_source": "toolkit runs (median steady)" if toolkit_step_seconds else "roofline run",
            "achieved_flops": achieved, "mfu": achieved / peak if achieved and peak else None,
            "mfu_fp32_peak": achieved / r["peak_fp32_flops"] if achieved and r.get("peak_fp32_flops") else None,
            "threads": r.get("threads"), "shapes": r.get("shapes"), "peak_tokens": r.get("peak_tokens"),
            "profile": r.get("profile"), "profiled_step": r.get("profiled_step"),
            "event_mfu": r.get("event_mfu")}


if __name__ == "__main__":
    worker_main(run)
