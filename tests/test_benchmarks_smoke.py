"""The benchmark harness still works: ``benchmarks/run.py --mode smoke`` end to end on the tiny model.

This checks structure and correctness properties only (every row present,
no failed run, a comparison copies no weights); timings are never asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _env() -> dict[str, str]:
    """The same qlora_nb as this test process imports (the installed wheel, or the checkout)."""
    import qlora_nb

    paths = [str(Path(qlora_nb.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def test_stats_and_same_round_ratios():
    sys.path.insert(0, str(BENCH))
    try:
        from render import fmt, stats
        from summary import _paired
    finally:
        sys.path.remove(str(BENCH))
    assert stats([3, None, 1, 2]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert stats([None]) is None and fmt(None) == "–"
    runs = [{"group": "toolkit", "round": 0, "ok": True, "t": {"v": 30.0}},
            {"group": "plain", "round": 0, "ok": True, "t": {"v": 10.0}},
            {"group": "toolkit", "round": 1, "ok": True, "t": {"v": 40.0}},
            {"group": "plain", "round": 1, "ok": True, "t": {"v": 40.0}},
            {"group": "toolkit", "round": 2, "ok": True, "t": {"v": 99.0}},
            {"group": "plain", "round": 2, "ok": False}]
    # Ratios pair runs of the same round; a round with a failed run gives no ratio.
    assert _paired(runs, "toolkit", "plain", "t", "v") == [3.0, 1.0]


def test_one_machine_fingerprint_for_every_benchmark():
    """run.py and gpu_check.py describe the machine with the same function (benchmarks/machine.py)."""
    import re

    sys.path.insert(0, str(BENCH))
    try:
        from machine import fingerprint
    finally:
        sys.path.remove(str(BENCH))
    fp = fingerprint("cpu")
    assert re.fullmatch(r"cpu-\d+core-[a-z0-9-]+", fp["name"]) and fp["cores"] == os.cpu_count()
    assert fp["cpu"] and fp["versions"]["python"]
    for script in ("run.py", "gpu_check.py"):
        src = (BENCH / script).read_text(encoding="utf-8")
        assert "from machine import fingerprint" in src and "/proc/cpuinfo" not in src and "nvidia-smi" not in src


@pytest.mark.slow  # 46-56 s on 2 cores: in `make test`, not in the fast tier
def test_smoke_run_writes_every_row(tmp_path, tiny_model_dir):
    out, md = tmp_path / "results", tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--mode", "smoke", "--model", str(tiny_model_dir),
         "--cutoff-len", "64", "--out", str(out), "--results-md", str(md)],
        capture_output=True, text=True, timeout=600, cwd=str(tmp_path), env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = list(out.glob("*.json"))
    assert len(files) == 1
    res = json.loads(files[0].read_text())
    rows = res["rows"]
    assert rows["failed_runs"] == []
    assert {"throughput", "memory", "startup", "dashboard", "compare", "bits"} <= set(rows)
    for contender in ("toolkit", "plain"):
        assert rows["throughput"][contender]["tokens_per_s"]["median"] > 0
        assert rows["memory"][contender]["median"] > 0
    assert rows["throughput"]["ratio_toolkit_vs_plain"]["n"] == 1
    assert rows["dashboard"]["ratio_with_vs_without"]["n"] == 1
    assert rows["startup"]["load_ext_seconds"]["n"] == 1
    assert rows["startup"]["heavy_modules_after_load_ext"] == []  # %load_ext must not import torch & co.
    assert rows["compare"]["weight_delta_bytes"] == 0  # base and adapted share one copy of the weights
    assert rows["compare"]["columns"] == ["base", "default"]
    assert set(rows["bits"]) == {"4", "8", "16"}
    weights = {b: rows["bits"][b]["weight_bytes"]["median"] for b in ("4", "8", "16")}
    assert weights["4"] < weights["8"] < weights["16"]
    # Both contenders saw the same data: the plain recipe pads every row to cutoff_len, the toolkit does not.
    runs = {r["group"]: r for r in res["runs"]}
    assert runs["plain"]["throughput"]["train_padded_tokens"] == 64 * 2 * 3
    assert runs["toolkit"]["throughput"]["train_padded_tokens"] <= 64 * 2 * 3
    roof = res["roofline"]  # the roofline worker ran: peaks, step FLOPs, MFU and a profile of one step
    assert roof["peak_bf16_flops"] > 0 and roof["peak_fp32_flops"] > 0 and roof["step_flops"] > 0
    assert 0 < roof["mfu"] and roof["profile"] and {"op", "share", "calls"} <= set(roof["profile"][0])
    ablation = res["ablation"]  # each CPU step change against what it replaced, in one process
    assert set(ablation) == {"dropout_masks", "kept_block_constants", "fused_adamw", "fused_rms_norm"}
    assert all(v["n"] == 1 and v["new_median_s"] > 0 and v["speedup_median"] > 0 for v in ablation.values())
    text = md.read_text()
    for title in ("1. Training throughput", "2. Peak memory", "3. Start-up", "4. Dashboard overhead",
                  "5. Comparison cost", "6. LoRA vs QLoRA vs 16-bit", "7. Roofline", "GPU figures pending"):
        assert title in text


def test_cli_help():
    proc = subprocess.run([sys.executable, str(BENCH / "run.py"), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--mode" in proc.stdout
