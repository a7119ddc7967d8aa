"""Planner vs measured: predicted training peak for the demo model on CPU against process peak RSS.

Each configuration runs in a fresh child process (``--child``): import, ``qlora_nb.load()`` the demo
model (4-bit NF4 + DQ, LoRA r=16 all-linear, the defaults), reset the kernel's peak-RSS counter
(``/proc/self/clear_refs`` 5), then two real training steps (forward with labels, backward, AdamW
step) on a ``batch_size x seq_len`` batch, and read ``VmHWM``. The parent asks ``qlora_nb.plan`` for
the same settings and writes both to ``benchmarks/results/planner-<machine>-<date>.json``.

    python benchmarks/planner_check.py            # the default grid
    python benchmarks/planner_check.py --quick    # three configurations
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GRID = [(1, 128, False), (2, 256, False), (4, 256, False), (2, 512, False), (4, 256, True), (2, 512, True)]
QUICK = [(1, 128, False), (4, 256, False), (4, 256, True)]


def _status_kib(field: str) -> int:
    with open(f"/proc/{os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def child(batch: int, seq: int, checkpointing: bool, model: str, steps: int) -> dict:
    """One measured run; returns the numbers as a dict (printed as JSON by main)."""
    import gc

    import torch

    import qlora_nb
    from qlora_nb.engine.model.quantize import guard_cpu_repack

    rss_import = _status_kib("VmRSS") * 1024
    t0 = time.perf_counter()
    session = qlora_nb.load(model)
    load_s = time.perf_counter() - t0
    m = session.model
    if checkpointing:
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        m.enable_input_require_grads()
    m.train()
    guard_cpu_repack(m)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
    gc.collect()
    rss_load = _status_kib("VmRSS") * 1024
    hwm_load = _status_kib("VmHWM") * 1024
    reset = _reset_peak()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, m.config.vocab_size, (batch, seq), generator=g)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = m(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    step_s = (time.perf_counter() - t0) / steps
    session.optimizer = opt
    return {"batch_size": batch, "seq_len": seq, "gradient_checkpointing": checkpointing,
            "rss_after_import": rss_import, "rss_after_load": rss_load, "peak_during_load": hwm_load,
            "peak_train": _status_kib("VmHWM") * 1024 if reset else None, "peak_reset_ok": reset,
            "load_s": load_s, "step_s": step_s, "loss": float(loss)}


def run_child(batch: int, seq: int, ckpt: bool, model: str, steps: int) -> dict:
    cmd = [sys.executable, __file__, "--child", str(batch), str(seq), str(int(ckpt)), "--model", model,
           "--steps", str(steps)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"batch_size": batch, "seq_len": seq, "gradient_checkpointing": ckpt,
                "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return json.loads(lines[-1])


def predict(row: dict, model: str) -> dict:
    import qlora_nb

    p = qlora_nb.plan(model, method="qlora", seq_len=row["seq_len"], batch_size=row["batch_size"],
                      gradient_checkpointing=row["gradient_checkpointing"], optimizer="adamw", device="cpu")
    return p.as_dict()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs=3, type=int, metavar=("BATCH", "SEQ", "CKPT"))
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=6, help="children run side by side (memory is per process)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.child:
        b, s, c = args.child
        print(json.dumps(child(b, s, bool(c), args.model, args.steps)), flush=True)
        return 0
    sys.path.insert(0, str(ROOT))
    rows = []
    from concurrent.futures import ThreadPoolExecutor

    grid = QUICK if args.quick else GRID
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # peak RSS is per process: parallel runs don't mix
        measured = list(pool.map(lambda g: run_child(*g, args.model, args.steps), grid))
    for row in measured:
        if "error" not in row:
            pred = predict(row, args.model)
            row["predicted"] = pred
            row["predicted_total"] = pred["total"]
            row["error_pct"] = 100 * (pred["total"] - row["peak_train"]) / row["peak_train"]
        rows.append(row)
        print(json.dumps({k: row.get(k) for k in ("batch_size", "seq_len", "gradient_checkpointing", "peak_train",
                                                  "predicted_total", "error_pct", "error")}), flush=True)
    ok = [r for r in rows if "error_pct" in r]
    worst = max((abs(r["error_pct"]) for r in ok), default=None)
    result = {"schema": 1, "what": "planner predicted training peak vs measured process peak RSS (CPU)",
              "machine": platform.node() or "cpu", "date": dt.datetime.now().isoformat(timespec="seconds"),
              "model": args.model, "steps": args.steps, "cpu_count": os.cpu_count(), "rows": rows,
              "worst_abs_error_pct": worst, "within_15pct": worst is not None and worst <= 15}
    out = Path(args.out) if args.out else HERE / "results" / (
        f"planner-{platform.node() or 'cpu'}-{dt.date.today().isoformat()}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"worst |error| {worst if worst is None else round(worst, 1)}% -> {out}")
    return 0 if result["within_15pct"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
