"""Statistics and the markdown report (``benchmarks/RESULTS.md``) from stored results files.

Kept separate from the runner so the report can be rendered again from the
JSON (``run.py --render-only``) and checked by the smoke test without running
anything heavy.
"""

from __future__ import annotations

import statistics
from typing import Any

ROW_TITLES = {
    "throughput": "1. Training throughput",
    "memory": "2. Peak memory",
    "startup": "3. Start-up",
    "dashboard": "4. Dashboard overhead",
    "compare": "5. Comparison cost",
    "bits": "6. LoRA vs QLoRA vs 16-bit",
    "roofline": "7. Roofline",
}


def stats(values) -> dict[str, Any] | None:
    """Median, min, max and n of the numbers given (None values dropped); None when there are none."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def _num(x: float, unit: str) -> str:
    if unit == "B":
        for u in ("B", "KiB", "MiB", "GiB"):
            if abs(x) < 1024 or u == "GiB":
                return f"{x:.0f} {u}" if u == "B" else f"{x:.1f} {u}"
            x /= 1024
    if unit == "x":
        return f"{x:.2f}x"
    if unit == "%":
        return f"{100 * x:.1f}%"
    if unit == "s":
        return f"{x:.2f} s" if abs(x) < 100 else f"{x:.0f} s"
    return f"{x:.1f}"


def fmt(s: dict[str, Any] | None, unit: str = "") -> str:
    """``median (min-max, n=k)``; a dash when nothing was measured."""
    if not s:
        return "–"
    if s["n"] == 1:
        return f"{_num(s['median'], unit)} (n=1)"
    return f"{_num(s['median'], unit)} ({_num(s['min'], unit)}–{_num(s['max'], unit)}, n={s['n']})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


NAMES = {"toolkit": "qlora_nb (`Session.train`)", "plain": "plain recipe (Trainer, padded to cutoff_len)",
         "unsloth": "Unsloth", "dashboard": "qlora_nb + live dashboard", "bits8": "qlora_nb 8-bit",
         "bits16": "qlora_nb 16-bit", "unfused": "qlora_nb without the fused CPU LoRA op (`fused_lora: false`)"}


def _name(group: str) -> str:
    if group.startswith("plain@"):
        return f"plain recipe, padded to {group.split('@')[1]}"
    return NAMES.get(group, group)


def _lengths(d: dict[str, Any] | None) -> str:
    if not d or d.get("mean_row_tokens") is None:
        return ""
    return (f"Rows are {d['mean_row_tokens']:.0f} tokens on average, {d['longest_row_tokens']} at most "
            f"({d['rows_truncated']} longer than cutoff_len {d['cutoff_len']}).")


def render_one(res: dict[str, Any]) -> list[str]:
    """The six rows of one results file."""
    rows, s = res["rows"], res["settings"]
    lines = [f"Machine `{res['machine']}` ({res.get('cpu_count')} cores), device `{res['device']}`, "
             f"{res['date']}, mode `{res['mode']}`, suite {res.get('suite_seconds', 0) / 60:.1f} min; "
             f"load average before/after: {', '.join(f'{x:.2f}' for x in res.get('loadavg_before', []))} / "
             f"{', '.join(f'{x:.2f}' for x in res.get('loadavg_after', []))}. "
             f"File: `results/{res.get('_file', '?')}`.", "",
             f"Model `{s['model']}` (4-bit NF4 + double quantization unless stated, LoRA r=16 all-linear), "
             f"data: {s['data']} ({s['rows']} rows), batch {s['batch_size']}, {s['steps']} steps, "
             f"cutoff_len {s['cutoff_len']}, {s['reps']} alternating rounds; reference: {s.get('reference')}.",
             _lengths(rows.get("data_lengths")),
             "Versions: " + ", ".join(f"{k} {v}" for k, v in res.get("versions", {}).items()) + ".", ""]
    if s.get("skipped"):
        lines += [f"**Left out of this run (`--skip`):** {', '.join(s['skipped'])}.", ""]
    if rows.get("failed_runs"):
        lines += ["**Failed runs:** " + "; ".join(f"{f['label']} (round {f['round']}): "
                                                  f"{str(f['error']).splitlines()[0][:200]}"
                                                  for f in rows["failed_runs"]), ""]
    t = rows["throughput"]
    lines += [f"### {ROW_TITLES['throughput']}", "",
              "Non-padding tokens per second over training steps 2..N (step 1 excluded as warm-up), counted by "
              "the same decoder hook for every contender.", ""]
    body = []
    for g in [k for k in t if not k.startswith("ratio_")]:
        if isinstance(t[g], dict):
            body.append([_name(g), fmt(t[g]["tokens_per_s"]), fmt(t[g]["all_steps_tokens_per_s"]),
                         fmt(t[g]["step_seconds"], "s"), fmt(t[g]["padding_fraction"], "%")])
    lines += _table(["", "tokens/s (steady)", "tokens/s (all steps)", "s/step", "padding computed"], body)
    lines += ["", f"**Ratio toolkit / plain (same round): {fmt(t.get('ratio_toolkit_vs_plain'), 'x')}**"
                  f" (plain padded to cutoff_len {s['cutoff_len']})"]
    if t.get("ratio_toolkit_vs_plain_cpu_time"):
        lines += ["", "Per CPU-second of each worker instead of per wall-clock second (less sensitive to other load "
                      f"on a shared machine): {fmt(t['ratio_toolkit_vs_plain_cpu_time'], 'x')}."]
    if t.get("ratio_padding_alone"):
        lines += ["", f"For scale: if time were proportional to tokens computed (padding included), padding alone "
                      f"would give {t['ratio_padding_alone']:.2f}x."]
    for k in t:
        if k.startswith("ratio_toolkit_vs_plain@"):
            cut = k.split("@")[1]
            note = " (`%%qlora_train`'s default cutoff_len)" if cut == str(_default_cutoff_len()) else ""
            lines += ["", f"**Ratio toolkit / plain padded to cutoff_len {cut}{note} (same round): "
                          f"{fmt(t[k], 'x')}**"]
    if t.get("ratio_fused_vs_unfused"):
        lines += ["", f"**Fused CPU LoRA op on / off (`fused_lora`, same round): {fmt(t['ratio_fused_vs_unfused'], 'x')}**"]
    if t.get("ratio_toolkit_vs_unsloth"):
        lines += [f"**Ratio toolkit / Unsloth (same round): {fmt(t['ratio_toolkit_vs_unsloth'], 'x')}**"]
    m = rows["memory"]
    lines += ["", f"### {ROW_TITLES['memory']}", "", f"Measured: {m['measure']}.", ""]
    lines += _table(["", "peak"], [[_name(g), fmt(v, "B")] for g, v in m.items()
                                   if g in NAMES or g.startswith("plain@")])
    lines += ["", f"**Ratio toolkit / plain (same round): {fmt(m.get('ratio_toolkit_vs_plain'), 'x')}**"]
    led = m.get("toolkit_ledger")
    if led:
        lines += ["", f"Toolkit ledger by component vs the measured peak (the median run, round {led['round']}; "
                      f"`activations_and_other` = measured - named; on CPU it includes the Python/torch runtime, "
                      f"RSS after load was {_num(led.get('rss_after_load_bytes') or 0, 'B')}):", ""]
        live = led.get("live_ledger") or {}
        lc = live.get("components") or {}
        comp = [[k, _num(lc[k], "B") if k in lc else "–", _num(v, "B")] for k, v in led["components"].items()]
        comp.append(["**measured**", f"{_num(live['measured_bytes'], 'B')} ({live.get('measured_source')})"
                     if live.get("measured_bytes") else "–",
                     f"**{_num(led['measured_bytes'], 'B')}** ({led['measured_source']})"])
        lines += _table(["component", "toolkit's last live ledger event", "after training, vs worker peak"], comp)
    st = rows["startup"]
    heavy = st.get("heavy_modules_after_load_ext") or []
    lines += ["", f"### {ROW_TITLES['startup']}", ""]
    body = [["`%load_ext qlora_nb`", fmt(st["load_ext_seconds"], "s") +
             (f" (imported: {', '.join(heavy)})" if heavy else " (no torch/transformers imported)")],
            ["`%qlora_load` cold (first in a fresh process, imports included, converted model cached)",
             fmt(st["cold_load_seconds"], "s")],
            ["`%qlora_load` warm (again in the same process, after `%qlora_unload`)",
             fmt(st["warm_load_seconds"], "s")],
            ["`%qlora_load` first ever (empty cache: GGUF -> safetensors conversion, download not timed)",
             fmt(st["first_ever_load_seconds"], "s")]]
    for g, v in st["first_step_after_train_call_s"].items():
        body.append([f"first training step done, from the train call: {NAMES[g]}", fmt(v, "s")])
    for g, v in st["first_step_from_launch_s"].items():
        body.append([f"first training step done, from process launch: {NAMES[g]}", fmt(v, "s")])
    lines += _table(["", "seconds"], body)
    d = rows["dashboard"]
    lines += ["", f"### {ROW_TITLES['dashboard']}", "",
              "Training with a `TrainingDashboard` subscribed to the session (no browser attached: the widget "
              "still updates its traits, the curve arrays included) vs none, same steps.", ""]
    lines += _table(["", "value"], [
        ["tokens/s with dashboard", fmt(d["tokens_per_s_with"])],
        ["tokens/s without", fmt(d["tokens_per_s_without"])],
        ["**ratio with / without (same round)**", f"**{fmt(d['ratio_with_vs_without'], 'x')}**"],
        ["dashboard's own time / training time", fmt(d["self_measured_fraction"], "%")],
        ["redraws per run", fmt(d["flushes"])]])
    c = rows.get("compare")
    lines += ["", f"### {ROW_TITLES['compare']}", ""]
    if c:
        lines += [f"`Session.compare` on {c['prompts']} prompt(s), columns {', '.join(c['columns'])}, "
                  f"{c['max_new_tokens']} new tokens, greedy; plain `model.generate` on the same formatted "
                  "prompts, alternated in one process.", ""]
        lines += _table(["", "value"], [
            ["weights + adapters bytes, after - before (expected 0)", _num(c["weight_delta_bytes"], "B")],
            ["RSS after - before", _num(c["rss_delta_bytes"], "B")],
            ["peak RSS growth during compare", _num(c["peak_rss_growth_bytes"], "B")],
            ["compare tokens/s", fmt(c["compare_tokens_per_s"])],
            ["plain generate tokens/s", fmt(c["generate_tokens_per_s"])],
            ["**ratio compare / generate**", f"**{fmt(c['ratio_compare_vs_generate'], 'x')}**"]])
    else:
        lines += ["Not measured in this run (skipped, or the compare run failed: see failed runs)."]
    lines += ["", f"### {ROW_TITLES['bits']}", "",
              "The same toolkit training run with the base stored at 16, 8 and 4 bits (LoRA on all linear layers).",
              ""]
    body = [[f"{b}-bit", fmt(v["peak_memory_bytes"], "B"), fmt(v["weight_bytes"], "B"), fmt(v["step_seconds"], "s"),
             fmt(v["tokens_per_s"])] for b, v in rows["bits"].items()]
    lines += _table(["base", "peak memory", "base weights (ledger)", "s/step", "tokens/s"], body)
    lines += render_roofline(res.get("roofline"))
    lines += render_ablation(res.get("ablation"))
    pc = res.get("planner_check")
    if pc:
        lines += ["", "### Planner check (`benchmarks/planner_check.py`)", "", "```",
                  (pc.get("stdout") or "").strip() or f"(no output; stderr: {(pc.get('stderr') or '').strip()[-500:]})",
                  "```"]
    return lines


def render_roofline(r: dict[str, Any] | None) -> list[str]:
    """Section 7: the matmul peak, the step's model FLOPs, MFU and the top ops of one profiled step."""
    lines = ["", f"### {ROW_TITLES['roofline']}", ""]
    if not r:
        return lines + ["Not measured in this run (skipped, or the roofline run failed: see failed runs)."]

    def tf(x: float | None) -> str:
        return f"{x / 1e12:.3f} TFLOP/s" if x else "–"

    shapes = ", ".join(f"{k}x{n}" for k, n in r.get("shapes") or [])
    lines += [f"`F.linear` at the model's linear shapes ({r.get('peak_tokens')} tokens x {shapes}), best call, "
              f"{r.get('threads')} threads; step FLOPs from `qlora_nb.engine.forecast.flops` (frozen linears forward + "
              "input gradient, LoRA forward/backward, attention, output layer on labelled positions only); "
              f"step time: {r.get('step_seconds_source')}.", ""]
    lines += _table(["", "value"], [
        ["bf16 matmul peak", tf(r.get("peak_bf16_flops"))], ["fp32 matmul peak", tf(r.get("peak_fp32_flops"))],
        ["model FLOPs per step", f"{r['step_flops'] / 1e9:.1f} GFLOP" if r.get("step_flops") else "–"],
        ["s/step", _num(r["step_seconds"], "s") if r.get("step_seconds") else "–"],
        ["achieved", tf(r.get("achieved_flops"))],
        ["**MFU (of the bf16 peak)**", f"**{_num(r['mfu'], '%')}**" if r.get("mfu") else "–"],
        ["MFU of the fp32 peak", _num(r["mfu_fp32_peak"], "%") if r.get("mfu_fp32_peak") else "–"]])
    if r.get("profile"):
        lines += ["", f"Top ops of one training step (step {r.get('profiled_step')}, `torch.profiler`, self CPU time):",
                  ""]
        lines += _table(["op", "share", "self time", "calls"],
                        [[f"`{o['op']}`", _num(o["share"], "%"), _num(o["self_seconds"], "s"), str(o["calls"])]
                         for o in r["profile"]])
    return lines


ABLATION_TITLES = {
    "dropout_masks": "dropout masks: SFC64 draws, compute-dtype factor (vs torch.randint words, bool mask)",
    "kept_block_constants": "float32 block constants kept for the run (vs re-derived by every dequantize_4bit)",
    "fused_adamw": "torch's fused AdamW (vs the foreach AdamW of `adamw_torch`)",
    "fused_rms_norm": "RMSNorm with a written-out backward, frozen weight (vs transformers' module)",
}


def render_ablation(a: dict[str, Any] | None) -> list[str]:
    """What each CPU step change buys, from ``benchmarks/ablation.py`` (alternating steps in one process)."""
    if not a:
        return []
    lines = ["", "#### What each step change buys (`benchmarks/ablation.py`)", "",
             "Each change and what it replaced, on the same batch in consecutive steps of one process "
             "(the order alternates); speed-up = previous step time / new step time, median of the pairs.", ""]
    body = [[ABLATION_TITLES.get(k, k), _num(v["new_median_s"], "s"), _num(v["previous_median_s"], "s"),
             f"**{v['speedup_median']:.3f}x** ({v['speedup_min']:.2f}x–{v['speedup_max']:.2f}x, n={v['n']})"]
            for k, v in a.items()]
    return lines + _table(["change", "s/step with", "s/step without", "speed-up"], body)


def _default_cutoff_len() -> int | None:
    """The toolkit's default ``cutoff_len`` (None where the package cannot be imported)."""
    try:
        from qlora_nb.config import TrainConfig
    except ImportError:
        return None
    return TrainConfig.__dataclass_fields__["cutoff_len"].default


def load_gpu_checks(results_dir) -> list[dict[str, Any]]:
    """Every ``gpu-*.json`` written by gpu_check.py in ``results_dir``, oldest first."""
    import json
    from pathlib import Path

    out = []
    for p in sorted(Path(results_dir).glob("gpu-*.json")):
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and data.get("schema") == "gpu-check-1":
            out.append(data | {"_file": p.name})
    return out


def _gib(x: Any) -> str:
    return f"{x / 2**30:.2f} GiB" if isinstance(x, (int, float)) else "–"


def render_gpu_check(res: dict[str, Any]) -> list[str]:
    """The GPU-check section of one gpu_check.py run: checks, tokens/s vs the plain recipe, peak vs planner."""
    env = res.get("env", {})
    s = res.get("settings", {})
    where = env.get("gpu") or env.get("device", "?")
    lines = [f"Run {res.get('date', '?')} on {where} (capability {env.get('capability')}, torch {env.get('torch')}, "
             f"transformers {env.get('transformers')}, peft {env.get('peft')}, bitsandbytes "
             f"{env.get('bitsandbytes')}), {res.get('wall_seconds', 0):.0f} s in all"
             f"{' — TINY CPU rehearsal, not GPU figures' if res.get('tiny') else ''}. Random weights at "
             f"{'tiny' if res.get('tiny') else 'real'} shapes, "
             f"NF4 + double quantization, `compute_dtype: auto`, {s.get('steps')} steps of batch "
             f"{s.get('batch_size')} x {s.get('cutoff_len')} tokens with {s.get('optimizer')}.", ""]
    body = []
    for name, m in res.get("models", {}).items():
        t = (m.get("toolkit") or {}).get("throughput", {})
        p = (m.get("plain") or {}).get("throughput", {})
        peak = m.get("peak") or {}
        ratio = m.get("ratio_toolkit_vs_plain")
        body.append([name, f"{m.get('build', {}).get('params', 0) / 1e9:.2f} B", str(m.get("compute_dtype")),
                     f"{t.get('steady_tokens_per_s') or 0:.0f}", f"{p.get('steady_tokens_per_s') or 0:.0f}",
                     f"{ratio:.2f}x" if ratio else "–", _gib(peak.get("cuda_max_memory_allocated")),
                     _gib(peak.get("planner_allocator_peak")),
                     f"{peak['ratio']:.3f}" if peak.get("ratio") else "–"])
    lines += _table(["model", "params", "dtype", "toolkit tokens/s", "plain tokens/s", "toolkit / plain",
                     "max_memory_allocated", "planner (allocator part)", "planner / measured"], body)
    checks = res.get("checks", [])
    failed = [c for c in checks if not c["ok"]]
    lines += ["", f"Checks: {len(checks) - len(failed)} of {len(checks)} passed."]
    for c in failed:
        lines.append(f"- FAILED {c['model']}: {c['check']}: {c['detail']}")
    return lines


def render_results(results: list[dict[str, Any]], gpu_checks: list[dict[str, Any]] | None = None) -> str:
    """RESULTS.md: the newest full run per device kind; GPU marked pending when none was recorded."""
    latest: dict[str, dict[str, Any]] = {}
    for r in sorted(results, key=lambda r: r.get("date", "")):
        latest["cuda" if str(r.get("device", "")).startswith("cuda") else "cpu"] = r
    lines = ["# Benchmark results", "",
             "Generated by `benchmarks/run.py` (`make bench`); do not edit by hand. Every figure is the median of "
             "several runs with (min–max, n); every ratio compares runs from the same round of alternating fresh "
             "processes. These machines are shared and noisy: absolute times are reported, never asserted.", "",
             "Separate reports, each written by its own script: [SPEED_ACCURACY.md](SPEED_ACCURACY.md) (time "
             "forecast vs measured, `speed_accuracy.py`), [MULTI_DEVICE.md](MULTI_DEVICE.md) (multi-device planner "
             "vs Answer.AI's FSDP-QLoRA figure, `multi_device_check.py`), `results/gguf-memory-*.json` (GGUF "
             "export memory, `gguf_memory.py`), `results/chat_overhead.json` and `results/metric_overhead.json`.",
             ""]
    for kind, title in (("cpu", "CPU"), ("cuda", "GPU")):
        lines += [f"## {title}", ""]
        if kind in latest:
            lines += render_one(latest[kind])
        elif kind == "cuda":
            lines += ["GPU figures pending: no CUDA run has been recorded yet. On a GPU machine run "
                      "`python benchmarks/run.py --mode full --device cuda` (paged 8-bit AdamW, CUDA memory "
                      "statistics; Unsloth is the reference where it installs, the plain recipe otherwise)."]
        else:
            lines += ["No CPU run recorded yet: run `make bench`."]
        lines.append("")
    lines += ["## GPU check (`make gpu-check`)", ""]
    if gpu_checks:
        lines += render_gpu_check(gpu_checks[-1])
    else:
        lines += ["Pending: `benchmarks/gpu_check.py` has not been run on a GPU yet (see benchmarks/README.md)."]
    lines.append("")
    return "\n".join(lines).rstrip() + "\n"
