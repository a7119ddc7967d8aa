"""One run of the toolkit's training path (``qlora_nb.load`` + ``Session.train``) in a fresh process.

Options in the spec: ``bits`` (4/8/16), ``dashboard`` (subscribe a live
``TrainingDashboard`` to the session's events, as ``%%qlora_train`` does),
plus the shared batch/steps/cutoff/data. Evaluation and probes are off
(``val_split=0``, ``n_probes=0``) so the window times training steps only,
as in the plain recipe; everything else is the toolkit's default.
"""

from __future__ import annotations

import time
from typing import Any

from common import TokenMeter, peak_memory, peak_rss_bytes, rss_now_bytes, worker_main


def run(spec: dict[str, Any]) -> dict[str, Any]:
    t_launch = spec.get("launched_at")
    import qlora_nb

    device = spec.get("device", "cpu")
    t0 = time.perf_counter()
    session = qlora_nb.load(spec["model_path"], bits=int(spec.get("bits", 4)), device=device)
    load_seconds = time.perf_counter() - t0
    rss_after_load = rss_now_bytes()
    meter = TokenMeter(session.model)
    dash = None
    if spec.get("dashboard"):
        from qlora_nb.views.dashboard import TrainingDashboard

        dash = TrainingDashboard.for_session(session)

    live: dict[str, Any] = {}

    def on_step(event: dict[str, Any]) -> None:
        if event.get("kind") == "step":
            meter.step_end()
        elif event.get("kind") == "ledger":
            live["ledger"] = event.get("ledger")

    unsubscribe = session.events.subscribe(on_step)
    options = {
        "max_steps": int(spec["steps"]), "batch_size": int(spec["batch_size"]), "cutoff_len": int(spec["cutoff_len"]),
        "val_split": 0, "n_probes": 0, "output_dir": spec["work_dir"], "overwrite": True,
        "gradient_checkpointing": bool(spec.get("gradient_checkpointing", False)),
        "seed": int(spec.get("seed", 42)),
    }
    if device.startswith("cuda"):
        options["optimizer"] = "paged_adamw_8bit"
    if spec.get("template"):
        options["template"] = spec["template"]
    options.update(spec.get("train_options") or {})
    t_train = time.perf_counter()
    result = session.train(data=spec["data"], **options)
    train_wall = time.perf_counter() - t_train
    unsubscribe()
    meter.close()
    summary = meter.summary()
    out: dict[str, Any] = {
        "contender": "toolkit", "bits": int(spec.get("bits", 4)), "dashboard": bool(dash),
        "load_seconds": load_seconds, "session_load_seconds": session.load_seconds,
        "train_call_seconds": train_wall, "rss_after_load_bytes": rss_after_load,
        "first_step_after_train_call_s": meter.step_ends[0][0] - t_train if meter.step_ends else None,
        "first_step_from_launch_s": None, "throughput": summary, "train_options": options,
    }
    if t_launch is not None and meter.step_ends:
        out["first_step_from_launch_s"] = time.time() - (time.perf_counter() - meter.step_ends[0][0]) - t_launch
    history = getattr(result, "history", None) or []
    reported = [h.get("tokens_per_s") for h in history if isinstance(h, dict) and h.get("tokens_per_s")]
    if reported:
        out["toolkit_reported_tokens_per_s_last"] = reported[-1]
    if dash is not None:
        out["dashboard_cost"] = {**dash.cost, "flushes": dash.flushes}
        dash.close()
    out["memory"] = peak_memory(device)
    ledger = session.ledger(measure=False)
    measured = out["memory"].get("cuda_max_allocated_bytes") or peak_rss_bytes()
    comps = ledger.as_dict()
    named = sum(v for k, v in comps.items() if k != "activations_and_other")
    comps["activations_and_other"] = max(0, measured - named)
    out["ledger"] = {"components": comps, "named_bytes": named, "measured_bytes": measured,
                     "measured_source": "cuda max_memory_allocated" if device.startswith("cuda") else
                     "process peak RSS (ru_maxrss)", "optimizer_name": ledger.optimizer_name,
                     "optimizer_paged": ledger.optimizer_paged, "params": ledger.params}
    if live.get("ledger"):  # the toolkit's own last live ledger (what the dashboard showed)
        ev = live["ledger"]
        out["live_ledger"] = {k: ev.get(k) for k in ("components", "measured_bytes", "measured_source")}
    return out


if __name__ == "__main__":
    worker_main(run)
