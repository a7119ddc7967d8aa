"""Accuracy of the time forecast: predicted vs measured seconds per step on the demo model, cell by cell.

For each base (``--bits``, one load each) × batch size × cutoff_len, this
trains a few steps with ``Session.train`` (the toolkit's real path, evaluation
and probes off) and takes the median of steps 2..N (step 1 is warm-up), and
prices the same configuration with the planner's forecast
(``session.plan(..., ledger=False)``: the machine's calibrated rates and the
data tokenized as training does). The data is the shipped demo set with every
four rows joined into one, so each row is longer than both cutoffs and the
cutoff really sets the tokens per row.

Run each base in its own process and under the machine lock (the figures are
meaningless with another torch process on the same cores), e.g.::

    flock /tmp/cpu.lock python benchmarks/speed_accuracy.py --bits 4
    python benchmarks/speed_accuracy.py --table   # the markdown table from the saved cells

Results: ``benchmarks/results/speed-accuracy-<machine>.json`` (one entry per
cell, merged across runs).

``--real-data`` checks the forecast a run makes for itself instead: the demo
rows as they are (about 80 tokens, shorter than both cutoffs, so batches are
padded to their longest row in the length-grouped order the Trainer draws),
trained with ``Session.train`` and ``logging_steps=1``; predicted is the run's
own ``predicted_step_s`` from its history, measured the median of its logged
``step_s`` after step 1. The load average before and after each cell is kept
beside it. Results: ``speed-accuracy-real-<machine>.json``; ``--table
--real-data`` prints that table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def results_path() -> Path:
    slug = "".join(c if c.isalnum() else "-" for c in cpu_name().lower()).strip("-")
    return HERE / "results" / f"speed-accuracy-{slug}-{os.cpu_count()}core.json"


def long_rows() -> list[dict[str, str]]:
    """The demo rows, four joined into one (three as context in the instruction), so rows exceed 256 tokens."""
    from qlora_nb.data.load import load_demo

    rows = load_demo().rows
    out = []
    for i in range(0, len(rows) - 3, 4):
        ctx = " ".join(f"{r['instruction']} {r['input']} {r['output']}" for r in rows[i:i + 3])
        out.append({"instruction": f"{ctx} {rows[i + 3]['instruction']}", "input": rows[i + 3]["input"],
                    "output": rows[i + 3]["output"]})
    return out


def run_bits(bits: int, batches: list[int], cutoffs: list[int], steps: int, work_dir: Path) -> list[dict]:
    import qlora_nb

    session = qlora_nb.load("smollm2-135m", bits=bits, device="cpu")
    data = long_rows()
    cells = []
    for batch in batches:
        for cutoff in cutoffs:
            plan = session.plan(ledger=False, data=data, batch_size=batch, seq_len=cutoff, max_steps=steps)
            ends: list[float] = []

            def on_event(ev: dict, ends: list[float] = ends) -> None:
                if ev.get("kind") == "step":
                    ends.append(time.perf_counter())

            unsubscribe = session.events.subscribe(on_event)
            t0 = time.perf_counter()
            session.train(data=data, max_steps=steps, batch_size=batch, cutoff_len=cutoff, val_split=0,
                          n_probes=0, output_dir=str(work_dir / f"{bits}-{batch}-{cutoff}"), overwrite=True,
                          report_to="none")
            unsubscribe()
            gaps = [b - a for a, b in zip([t0, *ends[:-1]], ends, strict=True)]
            measured = statistics.median(gaps[1:])
            predicted = plan.step_seconds
            cell = {"bits": bits, "batch": batch, "cutoff": cutoff, "measured_s": measured, "predicted_s": predicted,
                    "error": predicted / measured - 1.0, "step_gaps_s": gaps,
                    "terms": plan.forecast.time.terms, "tokens_per_row": plan.forecast.workload.tokens_per_row}
            print(json.dumps({k: cell[k] for k in ("bits", "batch", "cutoff", "measured_s", "predicted_s", "error")}),
                  flush=True)
            cells.append(cell)
    session.unload()
    return cells


def run_real(bits: int, batches: list[int], cutoffs: list[int], steps: int, work_dir: Path) -> list[dict]:
    """The run's own forecast vs its measured steady step, on the demo rows as they are."""
    import torch

    import qlora_nb
    from qlora_nb.data.load import load_demo
    from qlora_nb.engine.forecast.planning import plan_session
    from qlora_nb.engine.forecast.recalibrate import remeasure

    session = qlora_nb.load("smollm2-135m", bits=bits, device="cpu")
    data = load_demo().rows
    p = plan_session(session, measure=False)
    rates = remeasure(p.arch, p.config)[1]  # under the lock: a cache measured on a busy machine is repaired first
    print(json.dumps({"rates": rates.to_dict()}), flush=True)
    cells = []
    for batch in batches:
        for cutoff in cutoffs:
            load_before = os.getloadavg()[0]
            r = session.train(data=data, max_steps=steps, batch_size=batch, cutoff_len=cutoff, val_split=0,
                              n_probes=0, logging_steps=1, output_dir=str(work_dir / f"real-{bits}-{batch}-{cutoff}"),
                              overwrite=True, report_to="none")
            gaps = [h["step_s"] for h in r.history if "step_s" in h]
            predicted = next(h["predicted_step_s"] for h in r.history if h.get("predicted_step_s"))
            measured = statistics.median(gaps[1:])
            cell = {"bits": bits, "batch": batch, "cutoff": cutoff, "measured_s": measured, "predicted_s": predicted,
                    "error": predicted / measured - 1.0, "step_gaps_s": gaps, "load_before": load_before,
                    "load_after": os.getloadavg()[0], "threads": torch.get_num_threads(),
                    "tokens_per_s": r.metrics.get("tokens_per_s"), "rates": rates.to_dict(),
                    "forecast_check": (r.metrics.get("forecast_check") or {}).get("note")}
            print(json.dumps({k: cell[k] for k in ("bits", "batch", "cutoff", "measured_s", "predicted_s", "error",
                                                   "load_before", "load_after")}), flush=True)
            cells.append(cell)
    session.unload()
    return cells


def save(cells: list[dict], path: Path | None = None) -> None:
    path = path or results_path()
    old = json.loads(path.read_text()) if path.exists() else {"cells": []}
    keep = [c for c in old["cells"] if (c["bits"], c["batch"], c["cutoff"]) not in
            {(n["bits"], n["batch"], n["cutoff"]) for n in cells}]
    import torch

    old.update(cpu=cpu_name(), cores=os.cpu_count(), torch=torch.__version__,
               date=time.strftime("%Y-%m-%d"), cells=sorted(keep + cells, key=lambda c: (c["bits"], c["batch"],
                                                                                           c["cutoff"])))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(old, indent=1))


def real_path() -> Path:
    return results_path().with_name(results_path().name.replace("speed-accuracy-", "speed-accuracy-real-"))


def table(path: Path | None = None, real: bool = False) -> str:
    data = json.loads((path or (real_path() if real else results_path())).read_text())
    what = ("the demo rows as they are (padded per batch), the run's own predicted_step_s; median of logged steps "
            "2..N; load average before/after each cell" if real else "rows longer than the cutoff; median of steps 2..N")
    lines = [f"CPU: {data['cpu']} ({data['cores']} cores), torch {data['torch']}, {data['date']}; demo model "
             f"SmolLM2-135M, LoRA r=16 all-linear, {what}.", "",
             "| base | batch | cutoff | measured s/step | predicted s/step | error |" + (" load |" if real else ""),
             "|---|---|---|---|---|---|" + ("---|" if real else "")]
    for c in data["cells"]:
        lines.append(f"| {c['bits']}-bit | {c['batch']} | {c['cutoff']} | {c['measured_s']:.2f} | "
                     f"{c['predicted_s']:.2f} | {c['error']:+.0%} |"
                     + (f" {c['load_before']:.1f}/{c['load_after']:.1f} |" if real else ""))
    worst = max(abs(c["error"]) for c in data["cells"])
    lines += ["", f"Worst cell: {worst:.0%} (the forecast states ±25%)."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, choices=(4, 8, 16))
    ap.add_argument("--batches", default="1,4,8")
    ap.add_argument("--cutoffs", default="128,256")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--table", action="store_true", help="print the markdown table of the saved cells")
    ap.add_argument("--real-data", action="store_true", help="the run's own forecast on the demo rows as they are")
    args = ap.parse_args()
    if args.table:
        print(table(real=args.real_data))
        return
    if args.bits is None:
        ap.error("--bits or --table")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        run = run_real if args.real_data else run_bits
        cells = run(args.bits, [int(b) for b in args.batches.split(",")],
                    [int(c) for c in args.cutoffs.split(",")], args.steps, Path(tmp))
    save(cells, real_path() if args.real_data else None)


if __name__ == "__main__":
    main()
