"""The memory ledger: bytes by component, summed from the real tensors.

Weights and quantization constants are byte-exact: every ``Params4bit`` byte,
its absmax, code table and, with double quantization, the nested absmax,
offset and second code table. Tensors that share storage (tied embeddings)
count once. Only ``activations_and_other`` is inferred: measured memory (CUDA
allocator peak, or process RSS on CPU) minus everything named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..units import human_bytes

COMPONENTS = (
    "quantized_weights",
    "quant_constants",
    "other_weights",
    "adapters",
    "gradients",
    "optimizer_states",
    "activations_and_other",
)


@dataclass
class MatrixType:
    """LoRA cost of one adapted matrix type (e.g. every ``q_proj``)."""

    name: str
    d_in: int
    d_out: int
    r: int
    count: int

    @property
    def params_each(self) -> int:
        return self.r * (self.d_in + self.d_out)

    @property
    def params(self) -> int:
        return self.params_each * self.count


@dataclass
class Ledger:
    """Bytes per component plus parameter counts; ``as_dict()`` gives the bytes."""

    components: dict[str, int]
    params: dict[str, int]
    matrices: list[MatrixType] = field(default_factory=list)
    measured_bytes: int | None = None
    measured_source: str = "none"
    optimizer_paged: bool = False
    optimizer_name: str | None = None

    def as_dict(self) -> dict[str, int]:
        return dict(self.components)

    @property
    def weight_bytes(self) -> int:
        c = self.components
        return c["quantized_weights"] + c["quant_constants"] + c["other_weights"]

    @property
    def total(self) -> int:
        return sum(self.components.values())

    @property
    def bits_per_quantized_param(self) -> float | None:
        from .formulas import bits_per_quantized_param

        return bits_per_quantized_param(self.components, self.params.get("quantized", 0))

    @property
    def trainable_fraction(self) -> float:
        return self.params["trainable"] / max(1, self.params["total"])

    @property
    def bf16_weight_bytes(self) -> int:
        """The same base model stored in 16-bit, for the savings line."""
        return 2 * (self.params["total"] - self.params["trainable"])

    def to_event(self) -> dict[str, Any]:
        """JSON-safe form for widgets and events."""
        return {
            "components": self.as_dict(),
            "params": dict(self.params),
            "matrices": [
                {"name": m.name, "d_in": m.d_in, "d_out": m.d_out, "r": m.r, "count": m.count,
                 "params_each": m.params_each, "params": m.params}
                for m in self.matrices
            ],
            "bits_per_quantized_param": self.bits_per_quantized_param,
            "trainable_fraction": self.trainable_fraction,
            "bf16_weight_bytes": self.bf16_weight_bytes,
            "weight_bytes": self.weight_bytes,
            "measured_bytes": self.measured_bytes,
            "measured_source": self.measured_source,
            "optimizer_paged": self.optimizer_paged,
            "optimizer_name": self.optimizer_name,
        }

    def __str__(self) -> str:
        p = self.params
        lines = [
            f"parameters: {p['total']:,} total, {p['trainable']:,} trainable "
            f"({100 * self.trainable_fraction:.3f}%), {p['quantized']:,} quantized",
        ]
        bpp = self.bits_per_quantized_param
        if bpp is not None:
            lines.append(f"bits per quantized parameter: {bpp:.3f}")
        for m in self.matrices:
            lines.append(f"  LoRA {m.name:<12} r={m.r} x ({m.d_in}+{m.d_out}) = {m.params_each:,} x {m.count}"
                         f" = {m.params:,}")
        width = max(len(k) for k in COMPONENTS)
        for k in COMPONENTS:
            label = k
            if k == "optimizer_states" and self.optimizer_paged:
                label += " (paged)"
            lines.append(f"  {label:<{width + 8}} {human_bytes(self.components[k]):>12}")
        lines.append(f"  {'total':<{width + 8}} {human_bytes(self.total):>12}   (measured: {self.measured_source})")
        saved = self.bf16_weight_bytes - self.weight_bytes
        lines.append(f"base weights vs 16-bit: {human_bytes(self.weight_bytes)} vs {human_bytes(self.bf16_weight_bytes)}"
                     f" ({human_bytes(saved)} saved)")
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle) -> None:  # IPython plain-text display
        printer.text(str(self))


class _Counter:
    """Adds tensor bytes once per storage, so shared/tied tensors are not double counted."""

    def __init__(self) -> None:
        self.seen: set[tuple[int, int]] = set()

    def nbytes(self, t) -> int:
        import torch

        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return 0
        n = t.numel() * t.element_size()
        key = (t.data_ptr(), n)
        if n == 0 or key in self.seen:
            return 0
        self.seen.add(key)
        return n


def _quant_state_tensors(qs) -> list:
    """All tensors a bitsandbytes 4-bit ``QuantState`` holds, nested ones included."""
    out = [qs.absmax, qs.code]
    if getattr(qs, "nested", False) or getattr(qs, "state2", None) is not None:
        out.append(getattr(qs, "offset", None))
        s2 = getattr(qs, "state2", None)
        if s2 is not None:
            out += [s2.absmax, s2.code]
    return [t for t in out if t is not None]


def logical_numel(p) -> int:
    """Element count of the unquantized tensor (4-bit packs two values per byte)."""
    qs = getattr(p, "quant_state", None)
    if qs is not None and getattr(qs, "shape", None) is not None:
        return math.prod(qs.shape)
    return p.numel()


def is_quantized(p) -> bool:
    """4-bit weights (any storage dtype: FSDP-QLoRA packs them into bf16) and int8 weights."""
    cls = type(p).__name__
    if cls == "Params4bit":
        return getattr(p, "quant_state", None) is not None
    return cls == "Int8Params" and p.dtype in _int_dtypes()


def _int_dtypes():
    import torch

    return (torch.uint8, torch.int8)


def lora_matrices(model) -> list[MatrixType]:
    """Group peft LoRA layers by their module name suffix (q_proj, k_proj, …)."""
    groups: dict[tuple, MatrixType] = {}
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if lora_a is None or not hasattr(module, "in_features") or not len(lora_a):
            continue
        for a in lora_a.values():
            if not any(p.requires_grad for p in a.parameters()):
                continue
            r = a.out_features
            key = (name.rsplit(".", 1)[-1], module.in_features, module.out_features, r)
            if key not in groups:
                groups[key] = MatrixType(key[0], module.in_features, module.out_features, r, 0)
            groups[key].count += 1
    return sorted(groups.values(), key=lambda m: m.name)


def optimizer_state_bytes(optimizer, counter: _Counter | None = None) -> tuple[int, bool]:
    """Bytes of every tensor in an optimizer's state, and whether any is paged."""
    import torch

    counter = counter or _Counter()
    total, paged = 0, False
    if optimizer is None:
        return 0, False
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps optimizers
    for state in inner.state.values():
        for v in state.values():
            if isinstance(v, torch.Tensor):
                total += counter.nbytes(v)
                paged = paged or bool(getattr(v, "is_paged", False))
    return total, paged


def rss_bytes() -> int:
    """Current resident set size of this process (psutil reads /proc/self/statm on Linux)."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def measured_memory(device: str = "cpu", peak: int | None = None) -> tuple[int, str]:
    """Measured process memory for the activations residual: CUDA peak, or RSS on CPU."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.max_memory_allocated()), "cuda max_memory_allocated"
    if peak is not None:
        return int(peak), "process RSS, peak sampled during training"
    return rss_bytes(), "process RSS, now"


def reset_peak(device: str) -> None:
    """Start a new allocator peak on CUDA (each training run's ledger reports that run's peak, not the load's)."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()


def measure_ledger(model, optimizer=None, *, device: str = "cpu", peak_bytes: int | None = None,
                   measure: bool = True) -> Ledger:
    """The ledger of ``model`` (and ``optimizer``) from the tensors themselves."""
    counter = _Counter()
    comp = dict.fromkeys(COMPONENTS, 0)
    params = {"total": 0, "trainable": 0, "quantized": 0}
    seen_params: set[int] = set()
    for _, p in model.named_parameters():
        key = p.data_ptr()
        if key in seen_params:
            continue
        seen_params.add(key)
        n = logical_numel(p)
        params["total"] += n
        if p.requires_grad:
            params["trainable"] += n
            comp["adapters"] += counter.nbytes(p)
            if p.grad is not None:
                comp["gradients"] += counter.nbytes(p.grad)
        elif is_quantized(p):
            params["quantized"] += n
            comp["quantized_weights"] += counter.nbytes(p)
            qs = getattr(p, "quant_state", None)
            if qs is not None:
                for t in _quant_state_tensors(qs):
                    comp["quant_constants"] += counter.nbytes(t)
            scb = getattr(p, "SCB", None)  # LLM.int8 per-row scales
            if scb is not None:
                comp["quant_constants"] += counter.nbytes(scb)
        else:
            comp["other_weights"] += counter.nbytes(p)
    for _, b in model.named_buffers():
        comp["other_weights"] += counter.nbytes(b)
    opt_bytes, paged = optimizer_state_bytes(optimizer, counter)
    comp["optimizer_states"] = opt_bytes
    measured, source = (None, "not measured")
    if measure:
        measured, source = measured_memory(device, peak_bytes)
        named = sum(v for k, v in comp.items() if k != "activations_and_other")
        comp["activations_and_other"] = max(0, measured - named)
    opt_name = None
    if optimizer is not None:
        opt_name = type(getattr(optimizer, "optimizer", optimizer)).__name__
    return Ledger(comp, params, lora_matrices(model), measured, source, paged, opt_name)
