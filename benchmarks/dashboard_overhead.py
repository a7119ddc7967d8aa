"""What the live dashboard costs a training loop, measured inside a real Jupyter kernel.

A kernel is started with jupyter_client, so every widget update is really
serialized and sent over ZMQ (as in JupyterLab; no browser is needed for the
Python-side cost). A fake loop emits the engine's events (step + poll every
step, ledger every 10 steps, eval + 2 probes every 50) with a simulated step
time, once with the dashboard's throttle and once redrawing on every event.
The overhead is the time spent inside the dashboard's subscriber divided by
the loop's wall time.

    PYTHONPATH=. .venv/bin/python benchmarks/dashboard_overhead.py [--steps 400] [--step-ms 20] [--out x.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from common import report_json, run_cell_in_kernel  # noqa: E402  (run as a script from benchmarks/)

CELL = r"""
import json, time
from types import SimpleNamespace
from qlora_nb.events import EventBus
from qlora_nb.views.dashboard import TrainingDashboard

def run(steps, step_s, throttled):
    bus = EventBus()
    s = SimpleNamespace(events=bus, config=SimpleNamespace(model="bench"), stop_requested=False)
    kw = {} if throttled else {"min_interval": 0.0, "max_overhead": float("inf")}
    dash = TrainingDashboard.for_session(s, **kw)
    display(dash)
    ledger = {"components": {k: 1000 * i for i, k in enumerate(["quantized_weights", "quant_constants",
              "other_weights", "adapters", "gradients", "optimizer_states", "activations_and_other"])},
              "params": {"total": 134_515_008, "trainable": 4_884_480, "quantized": 106_168_320},
              "matrices": [{"name": n, "d_in": 576, "d_out": 576, "r": 16, "count": 30, "params_each": 18432,
                            "params": 552960} for n in ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                        "up_proj", "down_proj"]],
              "optimizer_paged": False, "optimizer_name": "adamw"}
    start = time.perf_counter()
    bus.emit("train_begin", max_steps=steps)
    for i in range(1, steps + 1):
        time.sleep(step_s)
        bus.emit("step", step=i, loss=2.0 / i, learning_rate=2e-4, tokens_per_s=300.0, epoch=i / steps,
                 max_steps=steps, eta_s=(steps - i) * step_s)
        if i % 10 == 0:
            bus.emit("ledger", ledger=ledger)
        if i % 50 == 0:
            bus.emit("eval", step=i, eval_loss=1.0 / i)
            for p in range(2):
                bus.emit("probe", step=i, prompt=f"prompt {p}", base="base text " * 5, adapted="adapted " * 5)
        bus.emit("poll", step=i)
    bus.emit("train_end", step=steps)
    wall = time.perf_counter() - start
    o = dash.overhead()
    spent = dash.cost["event_s"]
    return {"throttled": throttled, "steps": steps, "step_ms": 1000 * step_s, "wall_s": round(wall, 3),
            "events": o["events"], "redraws": o["flushes"], "subscriber_s": round(spent, 4),
            "per_event_us": round(1e6 * o["per_event_s"], 1), "per_redraw_ms": round(1e3 * o["per_flush_s"], 3),
            "per_step_us": round(1e6 * spent / steps, 1), "overhead_pct": round(100 * spent / wall, 3)}

print("RESULT " + json.dumps([run(STEPS, STEP_S, True), run(STEPS, STEP_S, False)]), flush=True)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--step-ms", type=float, default=20.0, help="simulated time of one training step")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()

    result = run_cell_in_kernel(f"STEPS, STEP_S = {args.steps}, {args.step_ms / 1000}\n" + CELL, ROOT, timeout=600)
    report_json(result, args.out)


if __name__ == "__main__":
    main()
