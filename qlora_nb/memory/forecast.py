"""Time next to memory for a plan: its own step and run time, every method side by side, and the fastest fit.

The seeds compare full fine-tuning, LoRA and QLoRA on memory, speed and
precision; this fills the first two for the planned model on this machine.
Setups are compared at the same *effective* batch (rows per optimizer step):
a smaller micro-batch is priced with the gradient accumulation that keeps it,
so "fastest" means the least time for the same training, not the shortest
step. A setup is a candidate only when its memory forecast fits (verdict
"fits", the planner's own rule); the rest are listed with why not.

Pure arithmetic over :mod:`.planner` (bytes) and :mod:`.speed` (seconds); the
rates come from the caller (the engine measures them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import PlanConfig
from ..units import human_bytes
from .architectures import Arch
from .multi_device import LINK_BYTES_PER_S, communication_seconds
from .planner import TIGHT, activation_bytes_per_token_layer, compute_components
from .speed import GPU_EFFICIENCY, Rates, StepTime, Workload, predict_step, run_steps

SETUPS: tuple[tuple[str, int], ...] = (("full", 16), ("lora", 16), ("lora", 8), ("qlora", 4))


def setup_label(method: str, bits: int) -> str:
    return {"full": "full (16-bit)", "lora": f"LoRA ({bits}-bit base)", "qlora": "QLoRA (4-bit base)"}[method] \
        if method != "lora" or bits != 8 else "LoRA (8-bit base)"


def format_seconds(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 120:
        return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def price(arch: Arch, cfg: PlanConfig, rates: Rates, work: Workload) -> tuple[StepTime, int]:
    """(step time, predicted memory bytes) of one configuration; ``work`` gives the tokens per row."""
    comp, params, matrices, _ = compute_components(arch, cfg)
    act = activation_bytes_per_token_layer(arch, cfg, matrices)
    w = Workload(cfg.batch_size, work.tokens_per_row, work.sq_tokens_per_row, work.labelled_per_row, work.rows,
                 work.from_data)
    t = predict_step(arch, cfg.method, cfg.base_bits, matrices, params["trainable"], act, w, rates,
                     cfg.gradient_checkpointing, cfg.gradient_accumulation_steps, int8_in_fp32=cfg.device == "cpu")
    if cfg.gpus > 1:  # each device runs its own micro-batches; the step also waits for the collectives
        whole = compute_components(arch, cfg.replace(gpus=1, strategy="ddp", cpu_offload=False))[0]
        t.terms["communication"] = communication_seconds(cfg, whole, cfg.interconnect)
        t.tokens *= cfg.gpus  # tokens of the whole step, every device's batch
    return t, sum(comp.values())


@dataclass
class Forecast:
    """The plan's own time, every method at the plan's batch, and the fastest setup that fits."""

    time: StepTime
    steps: int | None
    run_note: str
    methods: list[dict[str, Any]]
    fastest: dict[str, Any] | None
    fastest_note: str
    workload: Workload
    measured: list[dict[str, Any]] = field(default_factory=list)  # filled by --measure
    machine: str = ""  # whose rates: "cpu:<model>:<cores>", "cuda:<name>"
    link_note: str = ""  # how the communication term of several devices was priced

    @property
    def step_seconds(self) -> float:
        return self.time.step_seconds

    @property
    def run_seconds(self) -> float | None:
        return self.step_seconds * self.steps if self.steps else None

    def as_dict(self) -> dict[str, Any]:
        return {"step_seconds": self.step_seconds, "tokens_per_s": self.time.tokens_per_s,
                "run_seconds": self.run_seconds, "steps": self.steps, "run_note": self.run_note,
                "uncertainty": self.time.uncertainty, "source": self.time.source, "terms": dict(self.time.terms),
                "methods": [dict(m) for m in self.methods], "fastest": dict(self.fastest) if self.fastest else None,
                "fastest_note": self.fastest_note, "measured": [dict(m) for m in self.measured],
                "tokens_per_row": self.workload.tokens_per_row, "from_data": self.workload.from_data,
                "machine": self.machine, "link_note": self.link_note}

    def lines(self) -> list[str]:
        t = self.time
        pm = f"±{t.uncertainty:.0%}, " + (f"estimated for {self.machine.split(':', 1)[-1]} from its published peak "
                                           f"x {GPU_EFFICIENCY:.0%}" if t.source == "estimated"
                                           else f"rates measured on {self.machine or 'this machine'}")
        rows = (f"{self.workload.tokens_per_row:.0f} tokens per row from the data" if self.workload.from_data
                else "every row seq_len tokens (no data)")
        out = [f"time: {format_seconds(t.step_seconds)} per optimizer step ({pm}), {t.tokens_per_s:,.0f} tokens/s; "
               f"{rows}",
               "  terms: " + ", ".join(f"{k} {v:.3f} s" for k, v in t.terms.items())]
        if "communication" in t.terms:
            out.append(f"  communication: {self.link_note}")
        out.append(f"  run: {format_seconds(self.run_seconds)} for {self.run_note}" if self.steps
                   else f"  run: {self.run_note}")
        out.append("  by method (same batch):")
        for m in self.methods:
            measured = next((x for x in self.measured if x["method"] == m["method"] and x["bits"] == m["bits"]), None)
            extra = ""
            if measured is not None:
                extra = (f"   measured {format_seconds(measured['step_seconds'])}" if measured.get("step_seconds")
                         else f"   not measured: {measured.get('why', '')}")
            out.append(f"    {m['label']:<20} {format_seconds(m['step_seconds']):>9}/step  "
                       f"{human_bytes(m['memory_bytes']):>10}  {m['verdict']}{extra}")
        if self.fastest:
            f = self.fastest
            out.append(f"fastest that fits: {f['text']} — {format_seconds(f['step_seconds'])} per optimizer step")
        else:
            out.append(f"fastest that fits: {self.fastest_note}")
        return out


def _setup_cfg(cfg: PlanConfig, method: str, bits: int, **changes: Any) -> PlanConfig:
    return cfg.replace(method=method, bits=bits, **changes)


def _describe(method: str, bits: int, batch: int, accum: int, ckpt: bool) -> str:
    return (f"{setup_label(method, bits)}, batch_size {batch}"
            + (f" x {accum} accumulation" if accum > 1 else "")
            + (", gradient checkpointing" if ckpt else ""))


def build_forecast(arch: Arch, cfg: PlanConfig, rates: Rates, work: Workload, limit: int) -> Forecast:
    """Price the plan's own configuration, each method at its batch, and search the fastest that fits."""
    own, _ = price(arch, cfg, rates, work)
    steps, note = run_steps(Workload(cfg.batch_size * cfg.gpus, work.tokens_per_row, work.sq_tokens_per_row,
                                     work.labelled_per_row, work.rows, work.from_data),
                            cfg.max_steps, cfg.epochs, cfg.gradient_accumulation_steps)  # a step: every device's batch
    if cfg.method == "full" or cfg.dora:  # other methods keep the plan's LoRA settings; full has none to keep
        setups = [(cfg.method, cfg.base_bits)]
    else:
        setups = list(SETUPS)
    methods = []
    for method, bits in setups:
        c = _setup_cfg(cfg, method, bits)
        t, total = price(arch, c, rates, work)
        verdict = "fits" if total <= TIGHT * limit else "tight" if total <= limit else "won't fit"
        methods.append({"method": method, "bits": bits, "label": setup_label(method, bits),
                        "step_seconds": t.step_seconds, "tokens_per_s": t.tokens_per_s,
                        "run_seconds": t.step_seconds * steps if steps else None,
                        "memory_bytes": total, "verdict": verdict})
    effective = cfg.batch_size * cfg.gradient_accumulation_steps
    best: dict[str, Any] | None = None
    for method, bits in setups:
        b = cfg.batch_size
        batches = []
        while b >= 1:
            batches.append(b)
            b //= 2
        for batch in batches:
            accum = -(-effective // batch)
            for ckpt in (False, True):
                c = _setup_cfg(cfg, method, bits, batch_size=batch, gradient_accumulation_steps=accum,
                               gradient_checkpointing=ckpt)
                t, total = price(arch, c, rates, work)
                if total > TIGHT * limit:
                    continue
                if best is None or t.step_seconds < best["step_seconds"]:
                    best = {"method": method, "bits": bits, "batch_size": batch, "gradient_accumulation_steps": accum,
                            "gradient_checkpointing": ckpt, "step_seconds": t.step_seconds,
                            "memory_bytes": total, "text": _describe(method, bits, batch, accum, ckpt)}
    why = "" if best else (f"no setup fits in {human_bytes(limit)} (methods x batch sizes x gradient checkpointing "
                           f"searched)")
    link = ""
    if cfg.gpus > 1:
        kind = "cpu" if cfg.device == "cpu" else cfg.interconnect
        what = {"cpu": "gloo between CPU processes", "pcie": "PCIe", "nvlink": "NVLink"}[kind]
        link = (f"{cfg.gpus} devices over {what} at an estimated {LINK_BYTES_PER_S[kind] / 1e9:.0f} GB/s, not "
                "overlapped with compute (an upper bound; --interconnect nvlink for SXM boards)")
    return Forecast(own, steps, note, methods, best, why, work, machine=rates.machine, link_note=link)
