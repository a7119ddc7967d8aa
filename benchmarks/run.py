"""``make bench``: the toolkit against the plain recipe, side by side, in one run.

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
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
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

from render import load_gpu_checks, render_results, stats  # noqa: E402
from roofline import summary as roofline_summary  # noqa: E402

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


def machine_name(device: str) -> str:
    """A file-name-safe description: device kind, cores and CPU/GPU model."""
    if device.startswith("cuda"):
        try:
            gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=20).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            gpu = "gpu"
        name = f"cuda-{gpu}"
    else:
        cpu = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1]
                    break
        except OSError:
            pass
        cpu = re.sub(r"\((R|TM)\)|\bprocessor\b|\bCPU\b", "", cpu, flags=re.I)
        name = f"cpu-{os.cpu_count()}core-{cpu}"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("qlora_nb", "torch", "transformers", "peft", "bitsandbytes", "accelerate", "unsloth"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


# ---------------------------------------------------------------- workers
class Runner:
    """Starts workers one at a time and collects their JSON results and ``ru_maxrss``."""

    def __init__(self, work: Path, base_spec: dict[str, Any], timeout: float, verbose: bool = True) -> None:
        self.work = work
        self.base = base_spec
        self.timeout = timeout
        self.verbose = verbose
        self.runs: list[dict[str, Any]] = []

    def __call__(self, script: str, label: str, group: str, rnd: int = 0, env: dict[str, str] | None = None,
                 **spec: Any) -> dict[str, Any]:
        n = len(self.runs)
        run_dir = self.work / f"{n:03d}-{label}"
        run_dir.mkdir(parents=True)
        full = {**self.base, **spec, "out": str(run_dir / "result.json"), "work_dir": str(run_dir / "out"),
                "launched_at": time.time()}
        spec_path = run_dir / "spec.json"
        spec_path.write_text(json.dumps(full, indent=1))
        child_env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore",
                     "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PYTHONPATH": _child_pythonpath(), **(env or {})}
        log = open(run_dir / "log.txt", "wb")  # noqa: SIM115 - closed below
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(HERE / script), str(spec_path)], stdout=log,
                                stderr=subprocess.STDOUT, env=child_env, cwd=str(run_dir))
        status, rusage, timed_out = None, None, False
        while status is None:
            pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, rusage = st, ru
                break
            if time.perf_counter() - started > self.timeout:
                proc.kill()
                _, status, rusage = os.wait4(proc.pid, 0)
                timed_out = True
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.close()
        wall = time.perf_counter() - started
        result_path = run_dir / "result.json"
        if result_path.is_file():
            result = json.loads(result_path.read_text())
        else:
            tail = (run_dir / "log.txt").read_text(errors="replace")[-1500:]
            result = {"ok": False, "error": ("timed out" if timed_out else f"exit {proc.returncode}") + f": {tail}"}
        result.update(label=label, group=group, round=rnd, wall_seconds=wall,
                      child_ru_maxrss_bytes=rusage.ru_maxrss * 1024 if rusage else None)
        self.runs.append(result)
        if self.verbose:
            what = "ok" if result.get("ok") else "FAILED: " + str(result.get("error", ""))[:300]
            print(f"  [{n:2d}] {label:<18} round {rnd}  {wall:6.1f} s  {what}", flush=True)
        return result


def _child_pythonpath() -> str:
    """Workers import the same qlora_nb as this process (they run from their own folder)."""
    import qlora_nb

    parts = [str(Path(qlora_nb.__file__).resolve().parents[1])]
    parts += [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(dict.fromkeys(parts))


# ---------------------------------------------------------------- data
def standin_rows(n: int = 160, seed: int = 0) -> list[dict[str, str]]:
    """Instruction data of varied length, used only when the shipped demo data is missing."""
    import random

    rng = random.Random(seed)
    words = ("river stone apple cloud green seven laptop garden quickly music window yellow paper"
             " engine silver winter basket orange thunder pencil").split()
    rows = []
    for _ in range(n):
        k = rng.randint(2, 24)
        items = [rng.choice(words) for _ in range(k)]
        rows.append({"instruction": "Sort these words alphabetically.", "input": " ".join(items),
                     "output": " ".join(sorted(items))})
    return rows


def prepare_data(args, work: Path) -> tuple[Path, str, list[dict[str, Any]]]:
    """The training rows both contenders read, as one JSONL file; plus a description."""
    if args.data:
        from common import read_rows

        return Path(args.data), f"{args.data}", read_rows(args.data)
    try:
        from qlora_nb.data.load import load_demo

        rows = [{k: v for k, v in r.items()} for r in load_demo().rows]
        desc = "the shipped demo data (qlora_nb/data/demo/train.jsonl)"
    except Exception as exc:  # the demo data not shipped yet: say so in the report
        rows = standin_rows()
        desc = f"STAND-IN synthetic rows (demo data unavailable: {type(exc).__name__})"
    path = work / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, desc, rows


def prompt_texts(rows: list[dict[str, Any]], k: int) -> list[str]:
    """Free-text prompts for compare: the row's input (or instruction / first user message)."""
    out = []
    for r in rows[:k]:
        if "messages" in r:
            out.append(next(m["content"] for m in r["messages"] if m.get("role") == "user"))
        else:
            out.append(str(r.get("input") or r.get("instruction") or r.get("prompt") or next(iter(r.values()))))
    return out


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
    from qlora_nb.engine.models import ALIASES, cache_dir, resolve_model

    model_path = str(resolve_model(args.model))
    work = Path(tempfile.mkdtemp(prefix="qlora-bench-"))
    data_path, data_desc, rows = prepare_data(args, work)
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
        if mode["unfused"] and "unfused" not in skip:  # the A/B of the fused CPU LoRA op (engine/cpu_speed.py)
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

    results = {
        "schema": 1, "mode": args.mode, "device": args.device, "machine": machine_name(args.device),
        "date": dt.datetime.now().isoformat(timespec="seconds"), "versions": versions(),
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


def _get(run: dict[str, Any], *path: str) -> Any:
    cur: Any = run
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def _paired(runs, a: str, b: str, *path: str) -> list[float]:
    """Ratios a/b of the same metric from runs of the same round."""
    out = []
    for rnd in sorted({r["round"] for r in runs}):
        ra = [r for r in runs if r["group"] == a and r["round"] == rnd and r.get("ok")]
        rb = [r for r in runs if r["group"] == b and r["round"] == rnd and r.get("ok")]
        if ra and rb:
            va, vb = _get(ra[0], *path), _get(rb[0], *path)
            if va is not None and vb:
                out.append(va / vb)
    return out


def _group(runs, group: str, *path: str) -> dict[str, Any] | None:
    return stats([_get(r, *path) for r in runs if r["group"] == group and r.get("ok")])


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The six rows of the report from the raw runs (medians, min, max, same-round ratios)."""
    rate = ("throughput", "steady_tokens_per_s")
    step = ("throughput", "steady_step_seconds")
    groups = sorted({r["group"] for r in runs})
    failed = [{"label": r["label"], "round": r["round"], "error": r.get("error")} for r in runs if not r.get("ok")]
    reference = "unsloth" if "unsloth" in groups else "plain"
    extra = sorted((g for g in groups if g.startswith("plain@")), key=lambda g: int(g.split("@")[1]))
    train_groups = [g for g in ("toolkit", "plain", *extra, "unsloth", "dashboard", "bits8", "bits16", "unfused")
                    if g in groups]
    rows: dict[str, Any] = {"failed_runs": failed, "reference": reference}
    plain = [r for r in runs if r["group"] == "plain" and r.get("ok")]
    if plain:
        rows["data_lengths"] = {k: plain[0].get(k) for k in ("mean_row_tokens", "longest_row_tokens",
                                                              "rows_truncated", "cutoff_len")}
    rows["throughput"] = {
        g: {"tokens_per_s": _group(runs, g, *rate), "all_steps_tokens_per_s": _group(runs, g, "throughput",
                                                                                        "tokens_per_s"),
            "tokens_per_cpu_s": _group(runs, g, "throughput", "steady_tokens_per_cpu_s"),
            "step_seconds": _group(runs, g, *step), "padding_fraction": _group(runs, g, "throughput",
                                                                                "padding_fraction"),
            "train_call_seconds": _group(runs, g, "train_call_seconds")}
        for g in train_groups if g in ("toolkit", "plain", "unsloth", "unfused", *extra)
    }
    rows["throughput"]["ratio_toolkit_vs_plain"] = stats(_paired(runs, "toolkit", "plain", *rate))
    if "unfused" in groups:  # the fused CPU LoRA op on (toolkit) vs off, same round
        rows["throughput"]["ratio_fused_vs_unfused"] = stats(_paired(runs, "toolkit", "unfused", *rate))
    rows["throughput"]["ratio_toolkit_vs_plain_cpu_time"] = stats(
        _paired(runs, "toolkit", "plain", "throughput", "steady_tokens_per_cpu_s"))
    for g in extra:
        rows["throughput"][f"ratio_toolkit_vs_{g}"] = stats(_paired(runs, "toolkit", g, *rate))
    # What padding alone would explain if time were proportional to the tokens computed (padding included).
    useful = [(1 - a) for a in (_get(r, "throughput", "padding_fraction") for r in runs
                                if r["group"] == "toolkit" and r.get("ok")) if a is not None]
    plain_useful = [(1 - a) for a in (_get(r, "throughput", "padding_fraction") for r in runs
                                      if r["group"] == "plain" and r.get("ok")) if a is not None]
    if useful and plain_useful:
        rows["throughput"]["ratio_padding_alone"] = (sum(useful) / len(useful)) / (sum(plain_useful) /
                                                                                 len(plain_useful))
    if reference == "unsloth":
        rows["throughput"]["ratio_toolkit_vs_unsloth"] = stats(_paired(runs, "toolkit", "unsloth", *rate))
    mem_key = ("memory", "cuda_max_allocated_bytes") if any(_get(r, "memory", "cuda_max_allocated_bytes")
                                                           for r in runs) else ("child_ru_maxrss_bytes",)
    rows["memory"] = {"measure": "cuda max_memory_allocated" if mem_key[0] == "memory" else
                      "process peak RSS (ru_maxrss of the worker)"}
    for g in train_groups:
        rows["memory"][g] = _group(runs, g, *mem_key)
    rows["memory"]["ratio_toolkit_vs_plain"] = stats(_paired(runs, "toolkit", "plain", *mem_key))
    ledgers = [r for r in runs if r["group"] == "toolkit" and r.get("ok") and r.get("ledger")]
    if ledgers:
        mid = sorted(ledgers, key=lambda r: r["ledger"]["measured_bytes"])[len(ledgers) // 2]
        rows["memory"]["toolkit_ledger"] = {**mid["ledger"], "round": mid["round"],
                                            "live_ledger": mid.get("live_ledger"),
                                            "rss_after_load_bytes": mid.get("rss_after_load_bytes")}
    rows["startup"] = {
        "load_ext_seconds": _group(runs, "startup", "load_ext_seconds"),
        "heavy_modules_after_load_ext": sorted({m for r in runs if r["group"] == "startup" and r.get("ok")
                                                for m in r.get("heavy_modules_after_load_ext", [])}),
        "cold_load_seconds": _group(runs, "startup", "cold_load_seconds"),
        "warm_load_seconds": _group(runs, "startup", "warm_load_seconds"),
        "first_ever_load_seconds": _group(runs, "first_ever", "cold_load_seconds"),
        "first_step_after_train_call_s": {g: _group(runs, g, "first_step_after_train_call_s")
                                          for g in ("toolkit", "plain", "unsloth") if g in groups},
        "first_step_from_launch_s": {g: _group(runs, g, "first_step_from_launch_s")
                                     for g in ("toolkit", "plain", "unsloth") if g in groups},
    }
    dash = [r for r in runs if r["group"] == "dashboard" and r.get("ok") and r.get("dashboard_cost")]
    rows["dashboard"] = {
        "tokens_per_s_with": _group(runs, "dashboard", *rate), "tokens_per_s_without": _group(runs, "toolkit", *rate),
        "ratio_with_vs_without": stats(_paired(runs, "dashboard", "toolkit", *rate)),
        "self_measured_fraction": stats([(r["dashboard_cost"]["event_s"] + r["dashboard_cost"]["flush_s"])
                                         / r["throughput"]["train_seconds"] for r in dash
                                         if _get(r, "throughput", "train_seconds")]),
        "flushes": stats([r["dashboard_cost"].get("flushes") for r in dash]),
    }
    comp = [r for r in runs if r["group"] == "compare" and r.get("ok")]
    if comp:
        c = comp[0]
        rows["compare"] = {
            "weight_delta_bytes": c["weight_delta_bytes"], "rss_delta_bytes": c["rss_delta_bytes"],
            "peak_rss_growth_bytes": c["peak_rss_growth_bytes"], "columns": c["columns"], "prompts": c["prompts"],
            "max_new_tokens": c["max_new_tokens"],
            "compare_tokens_per_s": stats(c["tokens_per_s"]["compare"]),
            "generate_tokens_per_s": stats(c["tokens_per_s"]["generate"]),
            "ratio_compare_vs_generate": stats([a / b for a, b in zip(c["tokens_per_s"]["compare"],
                                                                        c["tokens_per_s"]["generate"],
                                                                        strict=True) if b]),
        }
    else:
        rows["compare"] = None
    rows["bits"] = {}
    for bits, g in ((16, "bits16"), (8, "bits8"), (4, "toolkit")):
        if g in groups:
            weights = [sum(_get(r, "ledger", "components", k) or 0 for k in
                           ("quantized_weights", "quant_constants", "other_weights"))
                       for r in runs if r["group"] == g and r.get("ok")]
            rows["bits"][str(bits)] = {"peak_memory_bytes": _group(runs, g, *mem_key),
                                       "tokens_per_cpu_s": _group(runs, g, "throughput", "steady_tokens_per_cpu_s"),
            "step_seconds": _group(runs, g, *step), "tokens_per_s": _group(runs, g, *rate),
                                       "weight_bytes": stats(weights)}
    return rows


# ---------------------------------------------------------------- output
def load_results(results_dir: Path) -> list[dict[str, Any]]:
    out = []
    for p in sorted(results_dir.glob("*.json")):
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and data.get("schema") == 1 and data.get("mode") == "full":
            data["_file"] = p.name
            out.append(data)
    return out


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
