"""What ``eval_metric`` costs training: tokens/s with it off, with it on, and without the hook at all.

One process, the demo model (NF4 + DQ, r=16 all-linear) on the demo data, the
same short run repeated in alternating order (so drift in the machine's speed
hits every setting alike):

- ``no_hook``: the Trainer's own ``log`` (the code before eval_metric existed);
- ``off``: this toolkit with ``eval_metric`` unset (the default);
- ``on``: ``eval_metric: exact_match`` on 16 held-out rows at each eval.

tokens/s counts only training steps (non-padding tokens / step time), so an
unchanged figure for ``off`` against ``no_hook`` is the claim that the hook is
free, and ``on`` shows that scoring stays out of the steps; the scoring's own
time is reported per eval. The plain transformers+peft+bitsandbytes recipe is
compared in ``benchmarks/run.py``; this benchmark isolates one toolkit option.

    PYTHONPATH=. .venv/bin/python benchmarks/metric_overhead.py [--steps 16] [--rounds 2] [--out x.json]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import tempfile
from pathlib import Path


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")),
                    platform.processor())
    except OSError:
        return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch
    from transformers import Trainer

    import qlora_nb
    from qlora_nb.engine.training import train as train_mod

    session = qlora_nb.load("smollm2-135m")
    original = train_mod._trainer_class

    def without_hook():
        cls = original()
        return type("NoHookTrainer", (cls,), {"log": Trainer.log})

    results: dict[str, list[dict]] = {"no_hook": [], "off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            order = ["no_hook", "off", "on"] if rnd % 2 == 0 else ["on", "off", "no_hook"]
            for name in order:
                train_mod._trainer_class = without_hook if name == "no_hook" else original
                try:
                    extra = {"eval_metric": "exact_match", "eval_metric_rows": 16} if name == "on" else {}
                    r = session.train(data="demo", max_steps=args.steps, eval_steps=args.steps // 2, n_probes=0,
                                      learning_rate=5e-4, output_dir=str(Path(tmp) / f"{name}{rnd}"), **extra)
                finally:
                    train_mod._trainer_class = original
                m = r.metrics
                results[name].append({"tokens_per_s": m["tokens_per_s"], "step_time_s": m["step_time_s"],
                                      "wall_s": m["wall_s"], "metric_s": m.get("eval_metric_s", 0.0),
                                      "metric_evals": m.get("eval_metric_evals", 0),
                                      "summary": m.get("eval_metric_summary", "")})
                print(name, rnd, f"{m['tokens_per_s']:.1f} tok/s", m.get("eval_metric_summary", ""), flush=True)
    summary = {k: {"median_tokens_per_s": statistics.median(x["tokens_per_s"] for x in v),
                   "runs": v} for k, v in results.items()}
    on = results["on"]
    summary["on"]["metric_s_per_eval"] = statistics.median(
        x["metric_s"] / (x["metric_evals"] + 1) for x in on)  # +1: the base's score before training
    summary["off_vs_no_hook"] = summary["off"]["median_tokens_per_s"] / summary["no_hook"]["median_tokens_per_s"]
    summary["on_vs_off"] = summary["on"]["median_tokens_per_s"] / summary["off"]["median_tokens_per_s"]
    summary["cpu"] = cpu_model()
    summary["threads"] = torch.get_num_threads()
    summary["steps"], summary["rounds"] = args.steps, args.rounds
    import json

    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
