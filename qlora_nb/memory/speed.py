"""Time next to memory: seconds per optimizer step from a config alone, as a sum of costs that can be checked.

A training step is predicted as five terms, each a count from the
architecture (:mod:`.architectures`) times a rate measured once on the machine
(:mod:`qlora_nb.engine.forecast.speed_calibration`, cached like the matmul peak):

* **matmul** — the step's matmul FLOPs (the same counts as
  :mod:`qlora_nb.engine.forecast.flops`: ``4KN`` per token per frozen linear, ``6KN``
  when the weight trains, ``6r(K+N)`` per adapter, ``12·l·d`` attention, the
  output layer on labelled tokens; gradient checkpointing adds one forward)
  divided by the measured matmul rate;
* **dequant** — a quantized base is expanded to the compute dtype in forward
  and in backward (three times with checkpointing): weights × passes × the
  measured seconds per weight for that storage (4-bit NF4/FP4, LLM.int8);
* **elementwise** — memory-bound ops (norms, activations, casts, dropout,
  residuals): bytes the step touches per token (``ELEMENTWISE_TOUCHES`` × the
  planner's saved-activation bytes of :func:`.planner.activation_bytes_per_token_layer`)
  over the measured elementwise bandwidth;
* **per-op** — fixed launch/dispatch cost per module call, forward and
  backward (``OPS_PER_LINEAR`` per linear, ``OPS_PER_LAYER`` per decoder layer,
  each adapter doubling its linear's ops);
* **optimizer** — trainable parameters × the measured AdamW seconds per
  parameter.

``ELEMENTWISE_TOUCHES``, ``OPS_PER_LINEAR`` and ``OPS_PER_LAYER`` are
structural counts (how many times a saved byte is read/written, how many
dispatches a module makes), fitted once against measured steps of the demo
model (``benchmarks/speed_fit.py`` on ``benchmarks/speed_accuracy.py``'s cells; ``benchmarks/SPEED_ACCURACY.md``);
the rates are what differ between machines. The prediction carries a relative
uncertainty: ``MEASURED_UNCERTAINTY`` when every rate was measured here (17 of 18
cells of the check run were within it on a 2-core AMD EPYC; the worst was 32%), ``ESTIMATED_UNCERTAINTY`` for a GPU priced from its
published peak.

No torch import: pure arithmetic over plain numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .architectures import Arch

# Structural coefficients, fitted by benchmarks/speed_fit.py (least squares on the relative error) against the
# measured cells of benchmarks/speed_accuracy.py on a 2-core AMD EPYC (torch 2.13 CPU), see SPEED_ACCURACY.md.
MATMUL_EFFICIENCY = 0.56  # a step's bf16 matmuls vs the isolated ones the calibration times
INT8_MATMUL_EFFICIENCY = 0.84  # LLM.int8's CPU training matmuls (fp32) vs the isolated fp32 ones
DEQUANT_FACTOR = {4: 6.2, 8: 5.6}  # the training path's dequantization (casts, copies) vs the bare kernel
ELEMENTWISE_TOUCHES = 6.0  # a saved byte is written in forward, read in backward, its gradient written and read...
OPS_PER_LINEAR = 123.0  # dispatches per linear (+ its adapter) per step: forward, backward, autograd bookkeeping
OPS_PER_LAYER = 823.0  # norms, rotary, attention, SwiGLU, residuals, forward and backward
MEASURED_UNCERTAINTY = 0.25
ESTIMATED_UNCERTAINTY = 0.5

# Published dense bf16/fp16 tensor-core peaks (FLOP/s, no sparsity) and memory bandwidth (bytes/s).
GPU_PEAKS: dict[str, tuple[float, float]] = {
    "T4": (65e12, 320e9),  # fp16 (no fast bf16 on sm75)
    "L4": (121e12, 300e9),
    "A10": (125e12, 600e9),
    "A10G": (70e12, 600e9),
    "V100": (125e12, 900e9),  # fp16
    "A100": (312e12, 1.55e12),
    "L40S": (362e12, 864e9),
    "H100": (989e12, 3.35e12),
    "H200": (989e12, 4.8e12),
    "RTX 4090": (165e12, 1.0e12),
    "RTX 3090": (71e12, 936e9),
}
GPU_EFFICIENCY = 0.35  # share of the published peak a LoRA step's matmuls reach (conservative; see gpu_check)


@dataclass
class Rates:
    """What one machine does per second: measured by the calibration, or estimated from published peaks."""

    matmul_flops_per_s: float
    elementwise_bytes_per_s: float
    op_seconds: float
    adamw_seconds_per_param: float
    dequant_seconds_per_weight: dict[int, float] = field(default_factory=dict)  # by base bits: 4, 8
    matmul_fp32_flops_per_s: float = 0.0  # 0: same as matmul_flops_per_s
    machine: str = ""
    source: str = "measured"  # "measured" (calibrated here) or "estimated" (published peak x efficiency)
    load_average: float | None = None  # the 1-minute load average while they were measured

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rates:
        deq = {int(k): float(v) for k, v in (d.get("dequant_seconds_per_weight") or {}).items()}
        return cls(float(d["matmul_flops_per_s"]), float(d["elementwise_bytes_per_s"]), float(d["op_seconds"]),
                   float(d["adamw_seconds_per_param"]), deq, float(d["matmul_fp32_flops_per_s"]),
                   str(d.get("machine", "")), str(d.get("source", "measured")),
                   float(d["load_average"]) if d.get("load_average") is not None else None)


def gpu_rates(name: str) -> Rates | None:
    """Rates for a GPU from its published peak × ``GPU_EFFICIENCY``, marked "estimated"; None if unknown."""
    key = next((k for k in sorted(GPU_PEAKS, key=len, reverse=True) if k.lower() in name.lower()), None)
    if key is None:
        return None
    flops, bandwidth = GPU_PEAKS[key]
    eff = GPU_EFFICIENCY
    # dequantizing reads the packed weight and writes 2 bytes per weight, at half the bandwidth (estimate)
    return Rates(matmul_flops_per_s=flops * eff, elementwise_bytes_per_s=bandwidth * eff, op_seconds=10e-6,
                 adamw_seconds_per_param=2.0 * 16 / (bandwidth * eff),
                 dequant_seconds_per_weight={4: 2.5 / (bandwidth * eff), 8: 3.0 / (bandwidth * eff)},
                 matmul_fp32_flops_per_s=flops * eff / 8, machine=f"cuda:{key}", source="estimated")


@dataclass
class Workload:
    """What a step computes: rows per step and their tokens (from the data when known, else ``seq_len`` each).

    From data, ``tokens_per_row`` is what the step *computes*: each row padded to its batch's longest
    (:mod:`.batches`), while ``real_tokens_per_row`` counts the rows' own tokens (what tokens/s reports).
    The rows' lengths are kept so :meth:`at` can re-price another batch size, whose padding differs.
    """

    batch_size: int
    tokens_per_row: float
    sq_tokens_per_row: float  # mean of l² (attention)
    labelled_per_row: float
    rows: int | None = None  # training rows, when the data is known
    from_data: bool = False
    real_tokens_per_row: float = 0.0  # 0: same as tokens_per_row (no padding)
    lengths: tuple[int, ...] = ()  # each row's tokens after truncation at the cutoff, when from data
    labelled: tuple[int, ...] = ()
    grouping: str = "group_by_length"  # how training batches rows (see .batches)
    steps: int | None = None  # optimizer steps of the run (a short run takes the longest batches first)
    grad_accum: int = 1

    @classmethod
    def padded(cls, batch_size: int, seq_len: int) -> Workload:
        """No data: every row ``seq_len`` tokens, every token labelled (an upper bound)."""
        return cls(batch_size, float(seq_len), float(seq_len) ** 2, float(seq_len))

    @classmethod
    def from_lengths(cls, batch_size: int, lengths: list[int], labelled: list[int], cutoff: int,
                     grouping: str = "group_by_length", steps: int | None = None, grad_accum: int = 1) -> Workload:
        """From tokenized rows: lengths capped at ``cutoff`` (training truncates there), padded per batch."""
        capped = tuple(min(x, cutoff) for x in lengths)
        lab = tuple(min(x, cutoff) for x in labelled) if len(labelled) == len(lengths) else capped
        w = cls(batch_size, 0.0, 0.0, 0.0, len(lengths), True, 0.0, capped, lab, grouping, steps, max(1, grad_accum))
        return w.at(batch_size, grad_accum)

    def at(self, batch_size: int, grad_accum: int = 1) -> Workload:
        """The same rows batched ``batch_size`` at a time (padding re-derived from the lengths when known)."""
        from dataclasses import replace

        from .batches import padded_means

        if not self.lengths:
            return replace(self, batch_size=batch_size, grad_accum=max(1, grad_accum))
        p = padded_means(list(self.lengths), list(self.labelled), batch_size, grad_accum, self.grouping, self.steps)
        return replace(self, batch_size=batch_size, grad_accum=max(1, grad_accum), tokens_per_row=p.tokens,
                       sq_tokens_per_row=p.sq_tokens, labelled_per_row=p.labelled, real_tokens_per_row=p.real)

    @property
    def tokens(self) -> float:
        return self.batch_size * self.tokens_per_row

    @property
    def real_tokens(self) -> float:
        return self.batch_size * (self.real_tokens_per_row or self.tokens_per_row)

    @property
    def padding_share(self) -> float:
        """Share of the computed tokens that are padding."""
        return 1.0 - self.real_tokens / self.tokens if self.tokens else 0.0


def step_flops(arch: Arch, method: str, matrices: list[dict[str, Any]], work: Workload,
               gradient_checkpointing: bool = False) -> tuple[float, float]:
    """Matmul FLOPs of one step: (the base's linears, everything else); see the module docstring."""
    kn = sum(s.d_in * s.d_out * s.count for s in arch.linears())
    lora = sum(int(m["r"]) * (int(m["d_in"]) + int(m["d_out"])) * int(m["count"]) for m in matrices)
    full = method == "full"
    base = ((6.0 if full else 4.0) + (2.0 if gradient_checkpointing else 0.0)) * kn * work.tokens
    adapters = (6.0 + (2.0 if gradient_checkpointing else 0.0)) * lora * work.tokens
    attention = 12.0 * arch.layers * arch.q_dim * work.batch_size * work.sq_tokens_per_row
    if gradient_checkpointing:
        attention *= 1.5
    head = (6.0 if full else 4.0) * arch.hidden * arch.vocab * work.batch_size * work.labelled_per_row
    return base, adapters + attention + head


@dataclass
class StepTime:
    """Seconds of one optimizer step by term."""

    terms: dict[str, float]
    tokens: float
    uncertainty: float
    source: str

    @property
    def step_seconds(self) -> float:
        return sum(self.terms.values())

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.step_seconds if self.step_seconds > 0 else 0.0


def run_steps(work: Workload, max_steps: int | None, epochs: float | None, grad_accum: int = 1) -> tuple[int | None, str]:
    """Optimizer steps of the run: ``max_steps``, else epochs × rows / (batch × accumulation); why not, if neither."""
    if max_steps and max_steps > 0:
        return int(max_steps), f"{max_steps} steps (max_steps)"
    if work.rows and epochs:
        per_epoch = -(-work.rows // (work.batch_size * max(1, grad_accum)))
        steps = max(1, round(per_epoch * epochs))
        return steps, f"{steps} steps ({epochs:g} epochs x {work.rows} rows / batch {work.batch_size})"
    return None, "give data for the run's total (or max_steps)"


def predict_step(arch: Arch, method: str, bits: int, matrices: list[dict[str, Any]], trainable: int,
                 act_bytes_per_token_layer: int, work: Workload, rates: Rates,
                 gradient_checkpointing: bool = False, grad_accum: int = 1, int8_in_fp32: bool = True) -> StepTime:
    """Seconds of one optimizer step (``grad_accum`` micro-batches of ``work``), term by term.

    ``int8_in_fp32``: bitsandbytes' LLM.int8 CPU training path (``MatMul8bitFp``) multiplies in fp32.
    """
    base_flops, other_flops = step_flops(arch, method, matrices, work, gradient_checkpointing)
    fp32 = rates.matmul_fp32_flops_per_s or rates.matmul_flops_per_s
    base_rate = fp32 if bits == 8 and int8_in_fp32 else rates.matmul_flops_per_s
    quantized = sum(s.d_in * s.d_out * s.count for s in arch.linears()) if bits in (4, 8) else 0
    passes = 3 if gradient_checkpointing else 2
    deq_rate = rates.dequant_seconds_per_weight.get(bits, 0.0)
    touched = ELEMENTWISE_TOUCHES * act_bytes_per_token_layer * arch.layers * work.tokens
    if gradient_checkpointing:
        touched *= 1.5
    n_linear = sum(s.count for s in arch.linears())
    adapted = sum(int(m["count"]) for m in matrices)
    ops = OPS_PER_LINEAR * (n_linear + adapted) + OPS_PER_LAYER * arch.layers
    micro = {
        "matmul": base_flops / base_rate / (INT8_MATMUL_EFFICIENCY if base_rate is fp32 and bits == 8
                                              else MATMUL_EFFICIENCY)
                  + other_flops / rates.matmul_flops_per_s / MATMUL_EFFICIENCY,
        "dequant": quantized * passes * deq_rate * DEQUANT_FACTOR.get(bits, 1.0),
        "elementwise": touched / rates.elementwise_bytes_per_s,
        "per_op": ops * (1.5 if gradient_checkpointing else 1.0) * rates.op_seconds,
    }
    terms = {k: v * max(1, grad_accum) for k, v in micro.items()}
    terms["optimizer"] = trainable * rates.adamw_seconds_per_param
    unc = ESTIMATED_UNCERTAINTY if rates.source == "estimated" else MEASURED_UNCERTAINTY
    return StepTime(terms, work.real_tokens * max(1, grad_accum), unc, rates.source)
