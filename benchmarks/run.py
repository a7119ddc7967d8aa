"""``make bench``: the toolkit against the plain recipe, side by side, in one run (the suite and its CLI).

Every measurement runs in a fresh worker process (``*_worker.py``,
``plain_recipe.py``), so peak memory is that process's own ``ru_maxrss``
(read by this parent with ``wait4``) and no run inherits another's caches.
Training runs alternate in rounds (toolkit, plain, toolkit + dashboard,
toolkit 8-bit, toolkit 16-bit, then again), so slow drift of a shared
machine hits every contender alike; each comparison is a ratio of runs from
the same round, reported as median (min-max) over rounds. Absolute times are
reported, never asserted.

    python benchmarks/run.py --mode full     # writes results/<machine>-<date>.json and RESULTS.md
    python benchmarks/run.py --mode smoke    # a few steps, into test-artifacts/bench-smoke/ (checks it works)
    python benchmarks/run.py --render-only   # RESULTS.md again from the stored results

The parts: :mod:`machine` (the one machine fingerprint, also gpu_check.py's),
:mod:`runner` (one worker per process, peak RSS by ``wait4``), :mod:`data_prep`
(the rows and prompts), :mod:`summary` (the report's rows) and :mod:`render`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:  # an installed qlora_nb (make bench) wins; a bare checkout uses its own sources
    import qlora_nb  # noqa: F401
except ImportError:
    sys.path.insert(1, str(HERE.parent))

from data_prep import prepare_data, prompt_texts  # noqa: E402
from machine import fingerprint  # noqa: E402
from render import load_gpu_checks, render_results  # noqa: E402
from roofline import summary as roofline_summary  # noqa: E402
from runner import Runner  # noqa: E402
from summary import load_results, summarize  # noqa: E402

MODES = {
    # reps: training rounds; steps/batch: per training run; compare: prompts x new tokens x reps in-process
    "smoke": dict(reps=1, steps=3, batch_size=2, startup_reps=1, compare_prompts=1, max_new_tokens=4,
                  compare_reps=1, first_ever=False, planner=False, bits=(4, 8, 16), extra_cutoffs=(), timeout=300,
                  peak_seconds=0.05, unfused=False, ablation_pairs=1),
    "full": dict(reps=3, steps=8, batch_size=4, startup_reps=3, compare_prompts=3, max_new_tokens=24,
                 compare_reps=2, first_ever=True, planner=True, bits=(4, 8, 16), extra_cutoffs=(256,), timeout=900,
                 peak_seconds=2.0, unfused=True, ablation_pairs=10),
}

SKIPPABLE = ("startup", "first_ever", "dashboard", "bits", "extra_cutoffs", "compare", "planner", "roofline",
             "unfused", "ablation")


# ---------------------------------------------------------------- suite
def run_suite(args) -> dict[str, Any]:
    mode = dict(MODES[args.mode])
    for key in ("reps", "steps", "batch_size"):
        if getattr(args, key) is not None:
            mode[key] = getattr(args, key)
    skip = set(args.skip)
    unknown = skip - set(SKIPPABLE)
    if unknown:
        raise SystemExit(f"--skip: unknown part(s) {', '.join(sorted(unknown))}; accepted: {', '.join(SKIPPABLE)}")
    mode["first_ever"] &= "first_ever" not in skip
    mode["planner"] &= "planner" not in skip
    if "bits" in skip:
        mode["bits"] = (4,)
    if "extra_cutoffs" in skip:
        mode["extra_cutoffs"] = ()
    from qlora_nb.engine.model.models import ALIASES, cache_dir, resolve_model

    model_path = str(resolve_model(args.model))
    work = Path(tempfile.mkdtemp(prefix="qlora-bench-"))
    data_path, data_desc, rows = prepare_data(args.data, work)
    base = {"model_path": model_path, "device": args.device, "data": str(data_path), "steps": mode["steps"],
            "batch_size": mode["batch_size"], "cutoff_len": args.cutoff_len, "seed": 42,
            "gradient_checkpointing": False}
    run = Runner(work, base, mode["timeout"])
    unsloth = args.device.startswith("cuda") and _importable("unsloth")
    load_before = os.getloadavg()
    started = time.perf_counter()
    print(f"qlora_nb benchmarks ({args.mode}, {args.device}): {len(rows)} rows of {data_desc}; work dir {work}")

    print("start-up")
    for i in range(0 if "startup" in skip else mode["startup_reps"]):
        run("startup_worker.py", "startup", "startup", i, model=args.model)
    if mode["first_ever"] and args.model.lower() in ALIASES:
        gguf = cache_dir() / "downloads" / Path(ALIASES[args.model.lower()].gguf_member).name
        if gguf.is_file():
            fresh = work / "empty-cache"
            (fresh / "downloads").mkdir(parents=True)
            os.symlink(gguf, fresh / "downloads" / gguf.name)
            run("startup_worker.py", "first-ever", "first_ever", 0, env={"QLORA_NB_CACHE": str(fresh)},
                model=args.model, first_ever=True)
            shutil.rmtree(fresh, ignore_errors=True)

    print("training rounds (alternating)")
    for i in range(mode["reps"]):
        run("toolkit_worker.py", "toolkit", "toolkit", i, bits=4)
        run("plain_recipe.py", "plain", "plain", i, bits=4)
        for cutoff in mode["extra_cutoffs"]:
            if cutoff != args.cutoff_len:
                run("plain_recipe.py", f"plain@{cutoff}", f"plain@{cutoff}", i, bits=4, cutoff_len=cutoff)
        if unsloth:
            run("unsloth_worker.py", "unsloth", "unsloth", i, bits=4)
        if "dashboard" not in skip:
            run("toolkit_worker.py", "toolkit+dashboard", "dashboard", i, bits=4, dashboard=True)
        for bits in mode["bits"]:
            if bits != 4:
                run("toolkit_worker.py", f"toolkit-{bits}bit", f"bits{bits}", i, bits=bits)
        if mode["unfused"] and "unfused" not in skip:  # the A/B of the fused CPU LoRA op (engine/speed/cpu_speed.py)
            run("toolkit_worker.py", "toolkit-unfused", "unfused", i, bits=4, train_options={"fused_lora": False})

    roof = None
    if "roofline" not in skip:
        print("roofline")
        roof = run("roofline.py", "roofline", "roofline", 0, bits=4, peak_seconds=mode["peak_seconds"])

    ablation = None
    if args.device == "cpu" and "ablation" not in skip and mode["ablation_pairs"]:
        print("ablation (each CPU step change vs what it replaced, alternating steps in one process)")
        ablation = run("ablation.py", "ablation", "ablation", 0, bits=4, pairs=mode["ablation_pairs"])

    print("comparison cost")
    if "compare" not in skip:
        run("compare_worker.py", "compare", "compare", 0, prompts=prompt_texts(rows, mode["compare_prompts"]),
            max_new_tokens=mode["max_new_tokens"], reps=mode["compare_reps"])

    planner = None
    script = HERE / "planner_check.py"
    if mode["planner"] and script.is_file():
        print("planner check")
        try:
            proc = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=600)
            planner = {"returncode": proc.returncode, "stdout": proc.stdout[-8000:], "stderr": proc.stderr[-2000:]}
        except subprocess.TimeoutExpired:
            planner = {"returncode": None, "stdout": "", "stderr": "timed out after 600 s"}

    machine = fingerprint(args.device)
    results = {
        "schema": 1, "mode": args.mode, "device": args.device, "machine": machine["name"], "cpu": machine["cpu"],
        "date": dt.datetime.now().isoformat(timespec="seconds"), "versions": machine["versions"],
        "cpu_count": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "suite_seconds": time.perf_counter() - started,
        "settings": {**{k: v for k, v in base.items() if k not in ("data",)}, "model": args.model,
                     "data": data_desc, "rows": len(rows), "reps": mode["reps"],
                     "startup_reps": mode["startup_reps"], "compare_prompts": mode["compare_prompts"],
                     "max_new_tokens": mode["max_new_tokens"], "compare_reps": mode["compare_reps"],
                     "skipped": sorted(skip),
                     "reference": "unsloth" if unsloth else "plain recipe"},
        "runs": run.runs, "planner_check": planner,
    }
    results["rows"] = summarize(run.runs)
    toolkit_step = (results["rows"]["throughput"].get("toolkit") or {}).get("step_seconds") or {}
    results["roofline"] = roofline_summary(roof, toolkit_step.get("median"))
    results["ablation"] = ablation.get("toggles") if ablation and ablation.get("ok") else None
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return results


def _importable(name: str) -> bool:
    from importlib.util import find_spec

    return find_spec(name) is not None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mode", choices=sorted(MODES), default="smoke")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (paged optimizers and CUDA memory stats)")
    ap.add_argument("--model", default="smollm2-135m", help="alias or local folder (default: the demo model)")
    ap.add_argument("--data", default=None, help="JSONL/JSON rows (default: the shipped demo data)")
    ap.add_argument("--cutoff-len", dest="cutoff_len", type=int, default=128,
                    help="the plain recipe pads every row to this; also the toolkit's cutoff_len")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", dest="batch_size", type=int, default=None)
    ap.add_argument("--out", default=None, help="results folder (default: benchmarks/results; smoke: test-artifacts/bench-smoke)")
    ap.add_argument("--results-md", dest="results_md", default=None,
                    help="markdown report (default: benchmarks/RESULTS.md in full mode, <out>/RESULTS.md in smoke)")
    ap.add_argument("--render-only", action="store_true", help="re-render the report from stored results")
    ap.add_argument("--skip", type=lambda v: [x.strip() for x in v.split(",") if x.strip()], default=[],
                    help="comma-separated parts to leave out (the report marks them unmeasured): startup, "
                         "first_ever, dashboard, bits, extra_cutoffs, compare, planner")
    ap.add_argument("--keep", action="store_true", help="keep the workers' folders (logs, specs)")
    args = ap.parse_args(argv)
    # Smoke results are not for committing: they go where `make clean` and .gitignore already look.
    default_out = HERE / "results" if args.mode == "full" else HERE.parent / "test-artifacts" / "bench-smoke"
    out_dir = Path(args.out) if args.out else default_out
    md_path = Path(args.results_md) if args.results_md else (HERE / "RESULTS.md" if args.mode == "full"
                                                              else out_dir / "RESULTS.md")
    if not args.render_only:
        results = run_suite(args)
        out_dir.mkdir(parents=True, exist_ok=True)
        day = results["date"][:10]
        path = out_dir / f"{results['machine']}-{day}.json"
        path.write_text(json.dumps(results, indent=1, default=str))
        print(f"wrote {path}")
        stored = [results | {"_file": path.name}] if args.mode != "full" else load_results(out_dir)
    else:
        stored = load_results(out_dir)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(render_results(stored, gpu_checks=load_gpu_checks(out_dir)))
    print(f"wrote {md_path}")
    failed = [] if args.render_only else results["rows"]["failed_runs"]
    for f in failed:
        print(f"FAILED run {f['label']} (round {f['round']}): {str(f['error'])[:400]}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
