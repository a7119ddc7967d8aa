"""When a measurement disagrees with the forecast: measure the machine's rates again and say why, once.

Two callers: a training run whose steady step (median of its logged step times
after the first, which pays for warm-up) is more than ``DRIFT`` from the
forecast it started with, and ``%qlora_plan --measure`` when a setup's
measured step is more than ``FLAG_RATIO`` times off its prediction. Both call
:func:`.speed_calibration.recalibrate`, which keeps the faster of the old and
new rate for each primitive: a cache measured while another process used the
cores is repaired by a quiet measurement, and a busy re-measurement cannot
make a good cache worse.

The likely cause named: a load average above this process's thread count
(another process on the cores: two torch processes on 2 cores ran 15-30x
slower here), else rates measured while the machine was busy (their own
recorded load average), else a machine slower or faster than when measured.
"""

from __future__ import annotations

import os
import statistics
from typing import Any

from ...memory.architectures import Arch
from ...memory.speed import Rates

DRIFT = 0.30  # a run this far from its forecast re-measures the rates
FLAG_RATIO = 2.0  # --measure flags a prediction this many times off its measurement
_DONE: set[str] = set()  # calibration targets re-measured by a run in this process (said once, not every run)


def steady_step(history: list[dict[str, Any]]) -> float | None:
    """Median logged step time after the first (warm-up); None with fewer than two."""
    gaps = [float(h["step_s"]) for h in history if isinstance(h.get("step_s"), (int, float)) and h["step_s"] > 0]
    return statistics.median(gaps[1:]) if len(gaps) >= 2 else None


def load_and_threads() -> tuple[float | None, int]:
    import torch

    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    return load, torch.get_num_threads()


def likely_cause(measured: float, predicted: float, load: float | None, threads: int, rates: Rates | None) -> str:
    """One clause naming the most likely reason a measurement and its forecast differ."""
    if load is not None and load > threads:
        return (f"another process is using the cores: the load average is {load:.1f}, above the {threads} threads "
                "this process uses (two torch processes on 2 cores ran 15-30x slower here)")
    then = rates.load_average if rates is not None else None
    if measured < predicted and then is not None and then > threads:
        return f"the cached rates were measured while the machine was busy (load average {then:.1f} then)"
    if measured < predicted:
        return "the cached rates were slower than this machine is now (measured while it was busy, or on another setup)"
    return "the machine is slower now than when its rates were measured (another process, or power/thermal limits)"


def calibration_target(arch: Arch, cfg: Any) -> tuple[list[tuple[int, int]], str, str] | None:
    """(shapes, dtype, device) the calibration measures for this plan; None for a GPU priced from its peak."""
    import sys

    from ...precision import resolve_compute_dtype

    shapes = sorted({(s.d_in, s.d_out) for s in arch.linears()})
    if cfg.device == "cpu":
        return shapes, resolve_compute_dtype(cfg.compute_dtype, "cpu"), "cpu"
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device()
    dtype = resolve_compute_dtype(cfg.compute_dtype, "cuda", torch.cuda.get_device_capability(index))
    return shapes, dtype, f"cuda:{index}"


def remeasure(arch: Arch, cfg: Any) -> tuple[Rates | None, Rates] | None:
    """Measure this plan's rates again (the better of old and new is cached); None when nothing is measured here."""
    from .speed_calibration import recalibrate

    target = calibration_target(arch, cfg)
    return recalibrate(*target) if target is not None else None


def check_run(session: Any, history: list[dict[str, Any]], predicted: float | None) -> dict[str, Any] | None:
    """After a run: None when its steady step is within ``DRIFT`` of ``predicted``; else re-measure and explain.

    The first such run per machine in a process re-measures and says so (``said``); later ones are only recorded.
    """
    measured = steady_step(history)
    if not measured or not predicted or abs(measured / predicted - 1.0) <= DRIFT:
        return None
    from .planning import plan_session

    load, threads = load_and_threads()
    p = plan_session(session, measure=False)
    once = repr(calibration_target(p.arch, p.config))
    first = once not in _DONE
    _DONE.add(once)
    result = remeasure(p.arch, p.config) if first else None
    old = result[0] if result else None
    cause = likely_cause(measured, predicted, load, threads, old)
    after = ("the machine's rates were measured again after the run (best of several repeats; the faster of the old "
             "and new figure kept), so the next forecast uses them" if result
             else "the rates were already measured again after an earlier run in this process" if not first
             else "the rates are a published estimate here, so nothing was re-measured")
    note = (f"time forecast: the steady step was {measured:.2f} s against a forecast of {predicted:.2f} s "
            f"({measured / predicted - 1.0:+.0%}); likely cause: {cause}. {after[0].upper()}{after[1:]}.")
    return {"measured_step_s": measured, "predicted_step_s": predicted, "error": predicted / measured - 1.0,
            "load_average": load, "threads": threads, "cause": cause, "remeasured": bool(result), "said": first,
            "note": note}


def flag_measurements(arch: Arch, cfg: Any, measured: list[dict[str, Any]]) -> str | None:
    """``--measure``: mark each setup whose prediction is ``FLAG_RATIO`` or more off; re-measure the rates if any is.

    Returns the cause (one clause) when something was flagged.
    """
    flagged = []
    for row in measured:
        m, p = row.get("step_seconds"), row.get("predicted_s")
        if not m or not p:
            continue
        ratio = max(m / p, p / m)
        if ratio >= FLAG_RATIO:
            row["flag"] = f"predicted {p:.2f} s is {ratio:.1f}x {'under' if p < m else 'over'} the measurement"
            flagged.append(row)
    if not flagged:
        return None
    load, threads = load_and_threads()
    result = remeasure(arch, cfg)
    worst = max(flagged, key=lambda r: max(r["step_seconds"] / r["predicted_s"], r["predicted_s"] / r["step_seconds"]))
    cause = likely_cause(worst["step_seconds"], worst["predicted_s"], load, threads, result[0] if result else None)
    return cause + ("; the rates were measured again for the next forecast" if result else "")
