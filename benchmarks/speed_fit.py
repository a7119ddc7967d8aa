"""Fit the forecast's structural coefficients (:mod:`qlora_nb.memory.speed`) to measured steps.

Reads the cells ``speed_accuracy.py`` saved, re-prices each with the current
code and this machine's calibrated rates with every coefficient at 1 (the
terms are linear in them), and solves the least squares of the *relative*
error for: the bf16 matmul efficiency, the LLM.int8 fp32 matmul efficiency,
the 4-bit and 8-bit dequantization factors and the per-op count scale.
``ELEMENTWISE_TOUCHES`` stays structural (it scales with tokens exactly as the
matmul term does, so the two cannot be told apart by these cells). Prints the
constants to paste into ``qlora_nb/memory/speed.py`` and each cell's error.
Run under the machine lock: ``flock /tmp/cpu.lock python benchmarks/speed_fit.py [CELLS.json]``. The constants
in the code were fitted on ``results/speed-fit-*.json`` (the first run); ``speed_accuracy.py``'s later run is
the check on cells the fit did not see.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    import numpy as np
    from speed_accuracy import long_rows, results_path

    import qlora_nb
    from qlora_nb.memory import speed as S

    path = Path(sys.argv[1]) if len(sys.argv) > 1 else results_path()
    cells = json.loads(path.read_text())["cells"]
    S.MATMUL_EFFICIENCY = S.INT8_MATMUL_EFFICIENCY = 1.0
    S.DEQUANT_FACTOR = {4: 1.0, 8: 1.0}
    data = long_rows()
    feats, target, weight = [], [], []
    for bits in sorted({c["bits"] for c in cells}):
        session = qlora_nb.load("smollm2-135m", bits=bits, device="cpu")
        for c in (c for c in cells if c["bits"] == bits):
            t = session.plan(ledger=False, data=data, batch_size=c["batch"], seq_len=c["cutoff"]).forecast.time.terms
            mm = t["matmul"]
            feats.append([mm if bits != 8 else 0.0, mm if bits == 8 else 0.0, t["dequant"] if bits == 4 else 0.0,
                          t["dequant"] if bits == 8 else 0.0, t["per_op"]])
            target.append(c["measured_s"] - t["optimizer"] - t["elementwise"])
            weight.append(1.0 / c["measured_s"])
        session.unload()
    A, y, w = np.array(feats), np.array(target), np.array(weight)
    coef, *_ = np.linalg.lstsq(A * w[:, None], y * w, rcond=None)
    print(f"MATMUL_EFFICIENCY = {1 / coef[0]:.3f}\nINT8_MATMUL_EFFICIENCY = {1 / coef[1]:.3f}\n"
          f"DEQUANT_FACTOR = {{4: {coef[2]:.2f}, 8: {coef[3]:.2f}}}\nper-op scale = {coef[4]:.2f} "
          f"(OPS_PER_LINEAR = {S.OPS_PER_LINEAR * coef[4]:.0f}, OPS_PER_LAYER = {S.OPS_PER_LAYER * coef[4]:.0f})")
    pred = A @ coef + (np.array([c["measured_s"] for c in cells]) - y)
    for c, p in zip(cells, pred, strict=True):
        print(f"{c['bits']:>2}-bit batch {c['batch']} cutoff {c['cutoff']}: measured {c['measured_s']:.2f} s, "
              f"fitted {p:.2f} s ({p / c['measured_s'] - 1:+.0%})")


if __name__ == "__main__":
    main()
