"""What the planner returns: predicted bytes per component, the verdict, and its text and table forms."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import PlanConfig
from ..units import human_bytes
from . import formulas as F
from .architectures import Arch
from .multi_device import describe

COMPONENTS = ("quantized_weights", "quant_constants", "other_weights", "adapters", "gradients",
              "optimizer_states", "activations", "logits", "overhead")
EXACT = frozenset(COMPONENTS[:6])  # storage arithmetic, byte-exact against the ledger (tests/test_planner.py)


def certainty(component: str, device: str) -> str:
    """How sure the plan is of one component (issue 31): exact arithmetic, a CPU fit, or the published check."""
    from .cuda_peak import CHECK_ERROR_PCT

    if component in EXACT:
        return "exact"
    if device == "cpu":
        return "fitted on CPU runs"
    return f"±{CHECK_ERROR_PCT}% published check"


@dataclass
class Plan:
    """Predicted bytes per component, the verdict against the memory limit, and the cheapest fix."""

    model: str
    source: str
    arch: Arch
    config: PlanConfig
    components: dict[str, int]
    params: dict[str, int]
    matrices: list[dict[str, int | str]]
    limit_bytes: int
    limit_source: str
    verdict: str = ""
    reason: str = ""
    paged_bytes: int = 0
    warnings: list[str] = field(default_factory=list)  # e.g. seq_len beyond the model's context
    measured: dict[str, int] | None = field(default=None, repr=False)
    forecast: Any = field(default=None, repr=False)  # memory.forecast.Forecast: time next to memory, when priced
    host_ram: dict[str, int] = field(default_factory=dict)  # bytes by cause (memory/multi_device.py)
    whole: dict[str, int] | None = field(default=None, repr=False)  # one device's components before any split

    @property
    def step_seconds(self) -> float | None:
        """Predicted seconds per optimizer step (None before the time forecast is attached)."""
        return self.forecast.step_seconds if self.forecast is not None else None

    @property
    def run_seconds(self) -> float | None:
        """Predicted seconds for the whole run (None without data or max_steps)."""
        return self.forecast.run_seconds if self.forecast is not None else None

    @property
    def fastest(self) -> dict[str, Any] | None:
        """The fastest setup that fits (method, bits, batch_size, gradient_checkpointing, step_seconds)."""
        return self.forecast.fastest if self.forecast is not None else None

    @property
    def per_device_peak(self) -> int:
        """Bytes one device holds at its peak (``components`` are already per device)."""
        return self.total

    @property
    def total(self) -> int:
        return sum(self.components.values())

    @property
    def trainable_params(self) -> int:
        return self.params["trainable"]

    @property
    def bits_per_quantized_param(self) -> float | None:
        return F.bits_per_quantized_param(self.whole or self.components, self.params["quantized"])

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.components)
        out.update(trainable_params=self.trainable_params, total_params=self.params["total"],
                   quantized_params=self.params["quantized"], bits_per_quantized_param=self.bits_per_quantized_param,
                   total=self.total, per_device_peak=self.per_device_peak, host_ram_bytes=self.host_ram.get("total"),
                   limit_bytes=self.limit_bytes, verdict=self.verdict, reason=self.reason,
                   warnings=list(self.warnings))
        if self.forecast is not None:
            out.update(step_seconds=self.step_seconds, run_seconds=self.run_seconds, fastest=self.fastest)
        return out

    def to_pandas(self):
        import pandas as pd

        rows = [{"component": k, "predicted_bytes": v,
                 **({"measured_bytes": self.measured.get(k)} if self.measured else {})}
                for k, v in self.components.items()]
        return pd.DataFrame(rows)

    def __str__(self) -> str:
        c = self.config
        head = (f"plan for {self.model} ({self.source}): {c.method}, {c.base_bits}-bit base"
                + (f" {c.quant.upper()}{' + DQ' if c.double_quant else ''}" if c.base_bits == 4 else "")
                + (f", r={c.r}" if c.method != "full" else "")
                + f", batch {c.batch_size} x {c.seq_len} tokens, {c.optimizer}"
                + (", gradient checkpointing" if c.gradient_checkpointing else "") + f", {c.device}"
                + (f"; per device of {describe(c)}" if describe(c) else ""))
        lines = [head, f"parameters: {self.params['total']:,} total, {self.trainable_params:,} trainable"
                 + (f", {self.bits_per_quantized_param:.3f} bits per quantized param"
                    if self.bits_per_quantized_param else "")]
        width = max(map(len, COMPONENTS)) + 2
        measured = self.measured or {}
        for k in [*COMPONENTS, *(k for k in self.components if k not in COMPONENTS)]:
            extra = ""
            if k in measured:
                extra = f"   measured {human_bytes(measured[k]):>10}" + ("  (exact)" if measured[k] == self.components[k]
                                                                    else "")
            lines.append(f"  {k:<{width}} {human_bytes(self.components[k]):>10}  {certainty(k, c.device):<24}"
                         f"{extra}".rstrip())
        lines.append(f"  {'total':<{width}} {human_bytes(self.total):>10}   vs {human_bytes(self.limit_bytes)} "
                     f"({self.limit_source})" + ("; on CUDA: the allocator's reserved bytes + the CUDA context"
                                                 if c.device != "cpu" else ""))
        if c.device != "cpu":
            lines.append("  (activations and logits: what is alive at the step's peak, the loss or one layer's "
                         "backward, whichever holds more)")
        if describe(c) and self.host_ram:
            h = self.host_ram
            lines.append(f"  host RAM {human_bytes(h['total'])}: {human_bytes(h['runtimes'])} process runtimes + "
                         f"{human_bytes(h['loading'])} to load the weights"
                         + (f", {human_bytes(h['offloaded_shards'])} of offloaded shards" if h["offloaded_shards"]
                            else ""))
        lines.append(f"verdict: {self.verdict} — {self.reason}")
        lines += [f"warning: {w}" for w in self.warnings]
        if self.forecast is not None:
            lines += ["", *self.forecast.lines()]
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(str(self))

    def to_event(self) -> dict[str, Any]:
        return {"model": self.model, "source": self.source, "components": dict(self.components),
                "total": self.total, "limit_bytes": self.limit_bytes, "verdict": self.verdict, "reason": self.reason,
                "per_device_peak": self.per_device_peak, "host_ram": dict(self.host_ram),
                "trainable_params": self.trainable_params, "bits_per_quantized_param": self.bits_per_quantized_param,
                "measured": self.measured, "warnings": list(self.warnings),
                "forecast": self.forecast.as_dict() if self.forecast is not None else None}
