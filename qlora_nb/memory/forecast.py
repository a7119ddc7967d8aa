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

from dataclasses import dataclass, field, replace
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
    w = work.at(cfg.batch_size, cfg.gradient_accumulation_steps)  # padding depends on the batch size
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
    setup: tuple[str, int] = ("", 0)  # the plan's own (method, bits)
    candidates: list[dict[str, Any]] = field(default_factory=list)  # every fitting setup the fastest search priced
    measure_note: str = ""  # why predictions and measurements disagree, when --measure flagged one

    @property
    def own_measured(self) -> dict[str, Any] | None:
        """The --measure row of the plan's own setup, when it was timed."""
        return next((m for m in self.measured if (m.get("method"), m.get("bits")) == self.setup
                     and m.get("step_seconds")), None)

    @property
    def step_seconds(self) -> float:
        """Seconds per optimizer step: measured here when --measure timed this setup, else the prediction."""
        own = self.own_measured
        return float(own["step_seconds"]) if own else self.time.step_seconds

    @property
    def certainty(self) -> str:
        """How sure the figure is, in words: measured, the ± of rates measured here, or a published estimate."""
        own = self.own_measured
        if own:
            n = max(1, len(own.get("step_gaps_s") or []) - 1)
            return f"measured here: median of {n} step(s) after warm-up; predicted {format_seconds(self.time.step_seconds)}"
        t = self.time
        if t.source == "estimated":
            return (f"±{t.uncertainty:.0%}, estimated from the {self.machine.split(':', 1)[-1]}'s published peak "
                    f"x {GPU_EFFICIENCY:.0%}")
        return f"±{t.uncertainty:.0%}, rates measured here on {self.machine or 'this machine'}"

    @property
    def run_seconds(self) -> float | None:
        return self.step_seconds * self.steps if self.steps else None

    def as_dict(self) -> dict[str, Any]:
        return {"step_seconds": self.step_seconds, "predicted_step_seconds": self.time.step_seconds,
                "certainty": self.certainty, "measure_note": self.measure_note,
                "padding_share": self.workload.padding_share, "tokens_per_s": self.time.tokens_per_s,
                "run_seconds": self.run_seconds, "steps": self.steps, "run_note": self.run_note,
                "uncertainty": self.time.uncertainty, "source": self.time.source, "terms": dict(self.time.terms),
                "methods": [dict(m) for m in self.methods], "fastest": dict(self.fastest) if self.fastest else None,
                "fastest_note": self.fastest_note, "measured": [dict(m) for m in self.measured],
                "tokens_per_row": self.workload.tokens_per_row, "from_data": self.workload.from_data,
                "machine": self.machine, "link_note": self.link_note}

    def lines(self) -> list[str]:
        t = self.time
        w = self.workload
        rows = (f"{w.real_tokens_per_row:.0f} tokens per row from the data, {w.tokens_per_row:.0f} computed with "
                f"padding ({w.padding_share:.0%}), {w.labelled_per_row:.0f} labelled" if w.from_data
                else "every row seq_len tokens (no data)")
        tps = t.tokens / self.step_seconds if self.step_seconds else 0.0
        out = [f"time: {format_seconds(self.step_seconds)} per optimizer step ({self.certainty}), {tps:,.0f} tokens/s; "
               f"{rows}",
               "  terms (predicted): " + ", ".join(f"{k} {v:.3f} s" for k, v in t.terms.items())]
        if "communication" in t.terms:
            out.append(f"  communication: {self.link_note}")
        out.append(f"  run: {format_seconds(self.run_seconds)} for {self.run_note}" if self.steps
                   else f"  run: {self.run_note}")
        out.append("  by method (same batch):")
        for m in self.methods:
            measured = next((x for x in self.measured if x["method"] == m["method"] and x["bits"] == m["bits"]), None)
            figure, extra = m["step_seconds"], ""
            if measured is not None and measured.get("step_seconds"):
                figure = measured["step_seconds"]
                extra = f"   measured (predicted {format_seconds(m['step_seconds'])})"
                if measured.get("flag"):
                    extra += f"  (!) {measured['flag']}"
            elif measured is not None:
                extra = f"   predicted; not measured: {measured.get('why', '')}"
            out.append(f"    {m['label']:<20} {format_seconds(figure):>9}/step  "
                       f"{human_bytes(m['memory_bytes']):>10}  {m['verdict']}{extra}")
        if self.measure_note:
            out.append(f"  (!) predictions far from the measurements; likely cause: {self.measure_note}")
        if self.fastest:
            f = self.fastest
            how = {"measured": "measured", "scaled": "predicted x its measured/predicted ratio",
                   "scaled by the others": "predicted x the measured setups' ratio"}.get(f.get("source", ""), "")
            out.append(f"fastest that fits: {f['text']} — {format_seconds(f['step_seconds'])} per optimizer step"
                       + (f" ({how})" if how else ""))
        else:
            out.append(f"fastest that fits: {self.fastest_note}")
        return out

    def apply_measured(self, measured: list[dict[str, Any]], note: str = "") -> None:
        """Let measurements win: each method's own figure, and the fastest re-chosen from measured step times.

        A setup measured at the plan's batch counts its measurement; the same setup at another batch or with
        checkpointing is its prediction times that setup's measured/predicted ratio; a setup not measured
        (full fine-tuning) is scaled by the median ratio of those that were, so a prediction that is low for
        every setup cannot win by being unmeasured.
        """
        import statistics

        self.measured, self.measure_note = measured, note
        ratios = {(m["method"], m["bits"]): m["step_seconds"] / m["predicted_s"] for m in measured
                  if m.get("step_seconds") and m.get("predicted_s")}
        if not ratios:
            return
        common = statistics.median(ratios.values())
        best = None
        for c in self.candidates:
            key = (c["method"], c["bits"])
            own = key in ratios and c.get("plan_batch")
            seconds = c["step_seconds"] * ratios.get(key, common)
            source = "measured" if own else "scaled" if key in ratios else "scaled by the others"
            if best is None or seconds < best["step_seconds"]:
                best = {**c, "step_seconds": seconds, "predicted_s": c["step_seconds"], "source": source}
        if best is not None:
            best.pop("plan_batch", None)
            self.fastest = best


def _setup_cfg(cfg: PlanConfig, method: str, bits: int, **changes: Any) -> PlanConfig:
    return cfg.replace(method=method, bits=bits, **changes)


def _describe(method: str, bits: int, batch: int, accum: int, ckpt: bool) -> str:
    return (f"{setup_label(method, bits)}, batch_size {batch}"
            + (f" x {accum} accumulation" if accum > 1 else "")
            + (", gradient checkpointing" if ckpt else ""))


def build_forecast(arch: Arch, cfg: PlanConfig, rates: Rates, work: Workload, limit: int) -> Forecast:
    """Price the plan's own configuration, each method at its batch, and search the fastest that fits."""
    own, _ = price(arch, cfg, rates, work)
    steps, note = run_steps(replace(work, batch_size=cfg.batch_size * cfg.gpus),
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
    candidates: list[dict[str, Any]] = []
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
                cand = {"method": method, "bits": bits, "batch_size": batch, "gradient_accumulation_steps": accum,
                        "gradient_checkpointing": ckpt, "step_seconds": t.step_seconds,
                        "memory_bytes": total, "text": _describe(method, bits, batch, accum, ckpt)}
                candidates.append({**cand, "plan_batch": (batch, accum, ckpt) == (
                    cfg.batch_size, cfg.gradient_accumulation_steps, cfg.gradient_checkpointing)})
                if best is None or t.step_seconds < best["step_seconds"]:
                    best = cand
    why = "" if best else (f"no setup fits in {human_bytes(limit)} (methods x batch sizes x gradient checkpointing "
                           f"searched)")
    link = ""
    if cfg.gpus > 1:
        kind = "cpu" if cfg.device == "cpu" else cfg.interconnect
        what = {"cpu": "gloo between CPU processes", "pcie": "PCIe", "nvlink": "NVLink"}[kind]
        link = (f"{cfg.gpus} devices over {what} at an estimated {LINK_BYTES_PER_S[kind] / 1e9:.0f} GB/s, not "
                "overlapped with compute (an upper bound; --interconnect nvlink for SXM boards)")
    return Forecast(own, steps, note, methods, best, why, work, machine=rates.machine, link_note=link,
                    setup=(cfg.method, cfg.base_bits), candidates=candidates)
