"""The report's rows from the raw worker runs: medians, min-max and same-round ratios; stored results read back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from render import stats


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
