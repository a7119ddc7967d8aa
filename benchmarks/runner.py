"""Runs each benchmark worker in a fresh process and collects its JSON result and peak RSS.

Peak memory is the worker's own ``ru_maxrss``, read by this parent with
``wait4``, so no run inherits another's caches or high-water mark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


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
                     "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PYTHONPATH": child_pythonpath(), **(env or {})}
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


def child_pythonpath() -> str:
    """Workers import the same qlora_nb as this process (they run from their own folder)."""
    import qlora_nb

    parts = [str(Path(qlora_nb.__file__).resolve().parents[1])]
    parts += [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(dict.fromkeys(parts))
