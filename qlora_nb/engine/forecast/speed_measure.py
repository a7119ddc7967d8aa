"""``%qlora_plan --measure``: a few real training steps of each setup that fits, beside the prediction.

Each setup (LoRA on a 16-bit base, LLM.int8, QLoRA) is measured on a
throwaway session loaded from the same model folder with the session's LoRA
settings, trained for ``steps`` steps with ``Session.train`` (evaluation,
probes and checkpoints off, in a temporary folder), then unloaded. The user's
session is never trained, so its adapters, trainable flags, active adapter
and weights stay as they were; what a measurement *can* change in the process
(the global RNG states that training seeds, the memory the copy used) is put
back or released, and :func:`qlora_nb.engine.rollback.fingerprint` is compared
before and after. Full fine-tuning is priced, not measured: the toolkit
trains adapters. A setup whose memory forecast does not fit is not tried, and
the plan says so.

The step time is the median of steps 2..N (step 1 pays for kernel selection
and allocator warm-up), the same rule as the accuracy benchmark. The measured
figures then win (:meth:`qlora_nb.memory.forecast.Forecast.apply_measured`):
the plan's own time, each method's row and the fastest setup; a prediction
2x or more off its measurement is flagged and the machine's rates are
measured again (:mod:`.recalibrate`).
"""

from __future__ import annotations

import contextlib
import gc
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...errors import QloraError
from ...memory.plan import Plan
from ..rollback import fingerprint


@contextlib.contextmanager
def kept_rng() -> Iterator[None]:
    """Training seeds Python's, numpy's and torch's generators; put them back afterwards."""
    import numpy as np
    import torch

    state = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.random.set_rng_state(state[2])


def synthetic_rows(tokens: int, n: int = 64) -> list[dict[str, str]]:
    """Rows longer than ``tokens`` (no data given): training truncates each to exactly the cutoff."""
    words = "the quick brown fox jumps over the lazy dog and keeps running".split()
    text = " ".join(words[i % len(words)] for i in range(tokens))
    return [{"instruction": text, "input": "", "output": text[: max(8, tokens)]} for _ in range(n)]


def time_steps(session, data: Any, steps: int, batch_size: int, cutoff_len: int, template: str | None,
               gradient_checkpointing: bool, work_dir: Path) -> list[float]:
    """Seconds between consecutive step events of a short real run."""
    ends: list[float] = []

    def on_event(ev: dict) -> None:
        if ev.get("kind") == "step":
            ends.append(time.perf_counter())

    unsubscribe = session.events.subscribe(on_event)
    t0 = time.perf_counter()
    try:
        session.train(data=data, max_steps=steps, batch_size=batch_size, cutoff_len=cutoff_len, val_split=0,
                      n_probes=0, template=template, gradient_checkpointing=gradient_checkpointing,
                      output_dir=str(work_dir), overwrite=True, logging_steps=1)
    finally:
        unsubscribe()
    return [b - a for a, b in zip([t0, *ends[:-1]], ends, strict=True)]


def measure_setups(session, plan: Plan, *, steps: int = 3, template: str | None = None,
                   loader=None) -> list[dict[str, Any]]:
    """Measure every setup of ``plan.forecast.methods`` that fits; results go to ``plan.forecast.measured``."""
    if plan.forecast is None:
        raise QloraError("this plan has no time forecast to measure against.", where="--measure")
    if steps < 2:
        raise QloraError(f"--measure needs at least 2 steps (step 1 is warm-up), got {steps}.", where="--measure")
    if loader is None:
        raise QloraError("measuring needs a way to load throwaway copies of the model.", where="--measure",
                         hint="Call session.plan(measure=True) (it passes qlora_nb.load).")
    cfg = plan.config
    data = cfg.data if cfg.data is not None else synthetic_rows(cfg.seq_len)
    before = fingerprint(session)
    c = session.config
    lora = {"r": cfg.r, "alpha": c.alpha, "dropout": cfg.dropout, "targets": list(cfg.targets), "dora": cfg.dora,
            "rslora": c.rslora, "quant": cfg.quant, "double_quant": cfg.double_quant, "compute_dtype": c.compute_dtype,
            "device": str(session.device).split(":")[0]}
    out: list[dict[str, Any]] = []
    for m in plan.forecast.methods:
        row = {"method": m["method"], "bits": m["bits"], "label": m["label"], "predicted_s": m["step_seconds"]}
        if m["method"] == "full":
            row["why"] = "full fine-tuning is priced, not measured (the toolkit trains adapters)"
        elif m["verdict"] != "fits":
            row["why"] = f"does not fit: the memory forecast says {m['verdict']}, so it was not tried"
        else:
            row.update(_measure_one(session, loader, m["bits"], lora, data, steps, cfg, template))
        out.append(row)
    after = fingerprint(session)
    if after != before:  # the user's session must be exactly as it was; say so loudly if not
        raise QloraError("measuring changed the session's adapters or trainable flags.", where="--measure",
                         hint=f"before {before}, after {after}; please report this.")
    from .recalibrate import flag_measurements

    note = flag_measurements(plan.arch, cfg, out)  # marks rows >= 2x off and re-measures the rates if any is
    plan.forecast.apply_measured(out, note or "")  # the measured figures win: own time, each method, fastest
    return out


def _measure_one(session, loader, bits: int, lora: dict[str, Any], data: Any, steps: int, cfg,
                 template: str | None) -> dict[str, Any]:
    copy = None
    try:
        with kept_rng(), tempfile.TemporaryDirectory(prefix="qlora-measure-") as tmp:
            copy = loader(str(session.model_path), bits=bits, **lora)
            gaps = time_steps(copy, data, steps, cfg.batch_size, cfg.seq_len, template, cfg.gradient_checkpointing,
                              Path(tmp))
        if len(gaps) < 2:
            return {"why": f"the run logged {len(gaps)} step(s); too few to time"}
        return {"step_seconds": statistics.median(gaps[1:]), "step_gaps_s": gaps}
    except QloraError as exc:
        return {"why": f"not measured: {exc}"}
    finally:
        if copy is not None:
            with contextlib.suppress(Exception):
                copy.unload()
        del copy
        gc.collect()
