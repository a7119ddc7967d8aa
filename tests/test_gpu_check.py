"""benchmarks/gpu_check.py's CPU rehearsal (``--dry-run``): the same code path as the GPU run, on a tiny model.

Checks structure and exact byte properties only (ledger = tensors = planner); no timing is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run(tmp_path):
    import qlora_nb

    paths = [str(Path(qlora_nb.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out),
                           "--work-dir", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=600, cwd=str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (res_file,) = out.glob("cpu-tiny-*.json")
    res = json.loads(res_file.read_text())
    names = {c["check"] for c in res["checks"]}
    assert all(c["ok"] for c in res["checks"]), [c for c in res["checks"] if not c["ok"]]
    assert {"ledger quantized_weights = tensor bytes", "ledger quant_constants = tensor bytes",
            "save + reload: adapter weights equal", "merge (verified)", "compare", "FSDP ran to the end",
            "FSDP in the ranks", "adapter back in the session"} <= names
    assert res["fsdp"]["ranks"] == 1 and res["fsdp"]["bits"] == 16 and len(res["fsdp"]["losses"]) == 3
    tiny = res["models"]["tiny"]
    assert tiny["toolkit"]["throughput"]["steps_seen"] == 3 and tiny["plain"]["throughput"]["train_tokens"] > 0
    assert not (tmp_path / "work").exists()  # the random models are deleted
    md = (out / "RESULTS.md").read_text()
    assert "TINY CPU rehearsal, not GPU figures" in md and "Checks: 12 of 12 passed" in md


def test_no_gpu_is_a_clear_exit():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2 and "no CUDA GPU visible" in proc.stderr
