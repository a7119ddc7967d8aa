"""What the studio adds to a training run's wall time, measured inside a real Jupyter kernel.

A kernel is started with jupyter_client, so every widget update is serialized and sent over ZMQ as in
JupyterLab. A stand-in session's ``train()`` emits the engine's events (train_begin, step + poll every
step, ledger every 10 steps, eval + 2 probes every 50, train_end) around a simulated step (``sleep``), so
the step itself costs the same in both arms and any difference is the studio's. Arm A calls
``session.train()`` directly (no view at all); arm B clicks Train, i.e. :meth:`Studio.train`, which builds
the embedded dashboard, routes its Stop to a kernel subshell, tracks the run and updates the panel.
The arms alternate ``--repeats`` times; the overhead is (B - A) / A of the median walls, and the time
spent inside the dashboard's subscriber is reported beside it. The first click of a kernel also imports
plotly and creates the kernel subshell; it is a one-step warm-up run, reported as ``first_click_s`` and
not counted. The defaults simulate the demo run: 60 steps of 1.2 s (SmolLM2-135M on 2 CPU cores).

    PYTHONPATH=. .venv/bin/python benchmarks/studio_overhead.py [--steps 60] [--step-ms 1200] [--repeats 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from common import report_json, run_cell_in_kernel  # noqa: E402  (run as a script from benchmarks/)

CELL = r"""
import json, statistics, time
from types import SimpleNamespace
from qlora_nb.events import EventBus
from qlora_nb.views.studio import Studio

LEDGER = {"components": {k: 1000 * i for i, k in enumerate(["quantized_weights", "quant_constants", "other_weights",
          "adapters", "gradients", "optimizer_states", "activations_and_other"])},
          "params": {"total": 134_515_008, "trainable": 4_884_480, "quantized": 106_168_320},
          "matrices": [], "optimizer_paged": False, "optimizer_name": "adamw"}

class BenchSession:
    # what the studio touches: events, config, adapters, request_stop, plan, train
    def __init__(self):
        self.events = EventBus()
        self.config = SimpleNamespace(model="bench")
        self.adapters = {"default": {}}
        self.stop_requested = False
        self.tokenizer = None
    def request_stop(self):
        self.stop_requested = True
    def plan(self, **options):
        raise RuntimeError("no planner for the stand-in model")  # the panel shows it; not timed
    def train(self, **options):
        bus, history = self.events, []
        bus.emit("train_begin", max_steps=STEPS)
        for i in range(1, STEPS + 1):
            time.sleep(STEP_S)
            e = dict(step=i, loss=2.0 / i, learning_rate=2e-4, tokens_per_s=300.0, epoch=i / STEPS,
                     max_steps=STEPS, eta_s=(STEPS - i) * STEP_S)
            history.append(e)
            bus.emit("step", **e)
            if i % 10 == 0:
                bus.emit("ledger", ledger=LEDGER)
            if i % 50 == 0:
                bus.emit("eval", step=i, eval_loss=1.0 / i)
                for p in range(2):
                    bus.emit("probe", step=i, prompt=f"prompt {p}", base="base text " * 5, adapted="adapted " * 5)
            bus.emit("poll", step=i)
        bus.emit("train_end", steps=STEPS)
        return SimpleNamespace(interrupted=False, checkpoint=None, adapter_dir="bench/adapter", truncated_rows=0,
                               metrics={"steps": STEPS}, output_dir=None, history=history)

session = BenchSession()
studio = Studio(session, data=[{"prompt": "a", "completion": "b"}], user_ns={})
display(studio)
t0 = time.perf_counter(); STEPS, steps = 1, STEPS; studio.train(); first_click = time.perf_counter() - t0; STEPS = steps
plain, with_studio, subscriber = [], [], []
for _ in range(REPEATS):
    t0 = time.perf_counter(); session.train(); plain.append(time.perf_counter() - t0)
    t0 = time.perf_counter(); studio.train(); with_studio.append(time.perf_counter() - t0)
    assert studio.status == "done", (studio.status, studio.error)
    subscriber.append(studio.dashboard.cost["event_s"])
a, b = statistics.median(plain), statistics.median(with_studio)
print("RESULT " + json.dumps({"steps": STEPS, "step_ms": 1000 * STEP_S, "repeats": REPEATS,
      "plain_wall_s": [round(x, 3) for x in plain], "studio_wall_s": [round(x, 3) for x in with_studio],
      "dashboard_subscriber_s": [round(x, 4) for x in subscriber], "redraws": studio.dashboard.flushes,
      "overhead_pct": round(100 * (b - a) / a, 3), "first_click_s": round(first_click, 3),
      "subscriber_pct": round(100 * statistics.median(subscriber) / b, 3),
      "stop_live": studio.stop_live}), flush=True)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--step-ms", type=float, default=1200.0, help="simulated time of one training step")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()

    result = run_cell_in_kernel(f"STEPS, STEP_S, REPEATS = {args.steps}, {args.step_ms / 1000}, {args.repeats}\n" + CELL, ROOT, timeout=1200)
    report_json(result, args.out)


if __name__ == "__main__":
    main()
