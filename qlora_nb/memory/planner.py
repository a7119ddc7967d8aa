"""The memory planner: the ledger's components predicted from a config alone.

Weights, quantization constants, adapters, gradients and optimizer states are
exact arithmetic over the module inventory of :mod:`.architectures` with the
storage rules of :mod:`.formulas` (byte-exact against the measured ledger for a
loaded model; tested). Activations, logits and overhead are a model:

Activations (bytes per token per decoder layer), read off the tensors autograd
saves for backward (``saved_tensors_hooks`` on the demo model, bf16, SDPA,
LoRA on all-linear), which refines Korthikanti et al.'s ``s·b·h·(34 + 5as/h)``
for LLaMA blocks: SDPA keeps no ``a·s²`` attention matrix (only q, k, v, the
output and an fp32 log-sum-exp per head), SwiGLU keeps gate, up and act(gate)
(``3·I`` in compute dtype), every RMSNorm keeps its fp32 upcast (``4h + 4``),
and each LoRA target keeps its input cast to fp32 plus, with dropout, the
dropped copy (``4·d_in`` each) and ``lora_A``'s fp32 output (``4r``). The sum
matched the saved bytes of the demo model within 0.2% (1.91 MB/token incl.
logits). Backward needs one more layer's worth of gradients in flight, so a
step peaks at ``(L + 1)`` layers; with gradient checkpointing only each layer's
input (``cd·h``) is kept plus two layers (recompute + gradients).

Logits (CPU): ``b·s·V·(cd + 5·4)``: the model's logits in compute dtype and five
fp32 tensors of the same shape alive at the loss backward (the upcast, the
log-probabilities cross-entropy keeps, their gradient, the logits' gradient
and a softmax temporary) — 22 B/token/vocab entry in bf16, vs 10 B kept after
the forward alone.

Fit (benchmarks/planner_check.py, this 2-core CPU, torch 2.13, demo model
SmolLM2-135M NF4+DQ, LoRA r=16 all-linear, dropout 0.05, AdamW, one step per
fresh process, peak = VmHWM after ``clear_refs``): peak RSS grew 3.05 MB per
token without checkpointing (256→1024 tokens; b·s = 2·512 and 4·256 peaked
within 0.1% of each other, so no s² term) and ~1.2 MB per token with it. The
structural model predicts 1.78 MB (layers) + 0.49 MB (logits) and 0.15 + 0.49;
solving both slopes gives a layer-activation scale of 1.11 (``CPU_ACT_SCALE``:
backward temporaries and malloc slack) and ≈5 fp32 logit copies; the
intercept, 886 MB, less the 190 MB of named tensors, is the runtime
(``CPU_RUNTIME_BYTES`` = 664 MiB). Residuals of the fit: +7.6% (128 tokens,
where the loader's freed heap absorbs part of the step), 0% (256), ±1.5%
(512), 0% (1024), +12%/−6% (1024 with checkpointing).

Overhead: on CPU the process RSS also holds the Python/torch/transformers
runtime, the tokenizer and heap the loader freed but kept (fit above).

On CUDA none of the CPU fit applies: activations, logits and overhead come from
:mod:`.cuda_peak` (what the pinned code keeps: 12 B per logit entry at the loss
backward, one recomputed layer in flight, the larger of the loss phase and the
layer phase, plus the CUDA context and the caching allocator's slack, fitted
and checked on published per-GPU peaks in benchmarks/published_memory.py).
The CUDA total is what the device must have: ``torch.cuda.max_memory_reserved``
plus the context.
"""

from __future__ import annotations

import math
import os
from typing import Any

from ..config import PlanConfig
from ..errors import QloraError, did_you_mean
from ..units import human_bytes, parse_memory
from . import formulas as F
from .architectures import ARCHITECTURES, Arch, resolve_arch
from .cuda_peak import CUDA_CONTEXT_BYTES, PINNED, Stack, dynamic_peak, slack_bytes
from .plan import COMPONENTS, Plan

# Fitted on this CPU by benchmarks/planner_check.py (see the module docstring and the results JSON).
CPU_RUNTIME_BYTES = 664 * 2**20  # python + torch + transformers + peft + bnb + tokenizer + retained heap
CPU_ACT_SCALE = 1.106  # RSS growth per saved-activation byte (backward temporaries, malloc slack)
LOGIT_FP32_COPIES = 5  # CPU: upcast, log-probs, their gradient, the logits' gradient, a softmax temporary
TIGHT = 0.9  # above this share of the memory the verdict is "tight"
OFFLOAD_HOST_BYTES = 128 * 2**30  # CPU offload is suggested only when its shards fit a 128 GiB workstation

def lora_matrices(arch: Arch, targets: list[str], r: int) -> list[dict[str, Any]]:
    """The adapted matrix types for ``targets`` ('all-linear' = every decoder linear; peft skips lm_head)."""
    specs = arch.linears()
    names = [s.name for s in specs]
    if [t.lower() for t in targets] == ["all-linear"]:
        chosen = specs
    else:
        chosen = []
        for t in targets:
            key = t.rsplit(".", 1)[-1]
            if key not in names:
                raise QloraError(f"LoRA target {t!r} is not a linear layer of {arch.name}.",
                                 where="plan option 'targets'",
                                 hint=did_you_mean(key, names + ["all-linear"]))
        chosen = [s for s in specs if s.name in {t.rsplit(".", 1)[-1] for t in targets}]
    return [{"name": s.name, "d_in": s.d_in, "d_out": s.d_out, "r": r, "count": s.count,
             "params_each": F.lora_params(r, s.d_in, s.d_out), "params": F.lora_params(r, s.d_in, s.d_out) * s.count}
            for s in chosen]


def activation_bytes_per_token_layer(arch: Arch, cfg: PlanConfig, matrices: list[dict[str, Any]],
                                     adapter_bytes: int = 4) -> int:
    """Bytes autograd keeps per token in one decoder layer (see the module docstring; ``adapter_bytes``: the
    LoRA weights' dtype, which the adapted input is cast to)."""
    cd = F.DTYPE_BYTES[cfg.compute_dtype]
    h, i = arch.hidden, arch.intermediate
    norms = arch.norms_per_layer * (4 * h + 4)
    attn = cd * (2 * arch.q_dim + 2 * arch.kv_dim) + 4 * arch.heads
    mlp = 3 * cd * i
    lora = 0
    if cfg.method != "full":
        # lora_A's fp32 input per target; dropout adds its noise tensor (fp32 on CPU, a bool mask on CUDA).
        per_in = adapter_bytes + ((4 if cfg.device == "cpu" else 1) if cfg.dropout > 0 else 0)
        for m in matrices:
            lora += (per_in * int(m["d_in"]) + adapter_bytes * int(m["r"])) * int(m["count"]) // arch.layers
    else:  # trainable weights: each linear keeps its input (shared inputs once)
        lora = cd * (h + arch.q_dim + h + i)
    return norms + attn + mlp + lora


def _trainable_tensors(arch: Arch, cfg: PlanConfig, matrices: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(numel, how many) of every trainable tensor: optimizer state is per tensor."""
    if cfg.method == "full":
        out = [(s.numel, s.count) for s in arch.linears()]
        out += [(s.d_out, s.count) for s in arch.linears() if s.bias]
        out += [(arch.vocab * arch.hidden, 1 if arch.tied else 2), (arch.hidden, arch.layers * arch.norms_per_layer + 1)]
        if arch.qk_norm:
            out.append((arch.head_dim, 2 * arch.layers))
        return out
    out = []
    for m in matrices:
        out += [(int(m["r"]) * int(m["d_in"]), int(m["count"])), (int(m["d_out"]) * int(m["r"]), int(m["count"]))]
        if cfg.dora:
            out.append((int(m["d_out"]), int(m["count"])))
    return out


def compute_components(arch: Arch, cfg: PlanConfig, stack: Stack = PINNED,
                       ) -> tuple[dict[str, int], dict[str, int], list, int]:
    """(components, params, LoRA matrices, paged bytes) for one architecture and configuration.

    ``stack``: what the training code keeps on CUDA (:mod:`.cuda_peak`); the default is the pinned libraries.
    """
    ab = F.FP32 if cfg.device == "cpu" else stack.adapter_bytes
    bits, cd = cfg.base_bits, F.DTYPE_BYTES[cfg.compute_dtype]
    comp = dict.fromkeys(COMPONENTS, 0)
    quantized = 0
    for s in arch.linears():
        n = s.numel
        if bits == 4:
            comp["quantized_weights"] += F.packed_4bit_bytes(n) * s.count
            comp["quant_constants"] += F.constants_4bit_bytes(n, cfg.double_quant) * s.count
            quantized += n * s.count
        elif bits == 8:
            w, scb = F.int8_bytes(s.d_in, s.d_out)
            comp["quantized_weights"] += w * s.count
            comp["quant_constants"] += scb * s.count
            quantized += n * s.count
        else:
            comp["other_weights"] += n * cd * s.count
        if s.bias:
            comp["other_weights"] += s.d_out * cd * s.count
    comp["other_weights"] += (arch.embedding_params() + arch.norm_params() + arch.scalar_buffers) * cd \
        + arch.rotary_buffer_numel() * F.FP32

    matrices = [] if cfg.method == "full" else lora_matrices(arch, cfg.targets, cfg.r)
    tensors = _trainable_tensors(arch, cfg, matrices)
    trainable = sum(n * k for n, k in tensors)
    base_params = arch.total_params()
    if cfg.method == "full":
        comp["gradients"] = trainable * cd
    else:
        comp["adapters"] = trainable * ab
        comp["gradients"] = trainable * ab
    paged = 0
    for n, k in tensors:
        if cfg.optimizer in ("adamw_8bit", "paged_adamw_8bit"):
            b = F.adamw8bit_state_bytes(n)
        elif cfg.optimizer == "adamw" and cfg.method != "full" and ab != F.FP32:
            b = 2 * ab * n + F.FP32  # torch AdamW keeps its moments in the parameter's dtype
        else:
            b = F.adamw_state_bytes(n)
        comp["optimizer_states"] += b * k
        if cfg.optimizer.startswith("paged") and n >= 100_000:
            paged += b * k

    tokens = cfg.batch_size * cfg.seq_len
    per_layer = activation_bytes_per_token_layer(arch, cfg, matrices, ab)
    if cfg.device == "cpu":  # the RSS fit (module docstring)
        if cfg.gradient_checkpointing:
            act = tokens * (arch.layers * cd * arch.hidden + 2 * per_layer)
        else:
            act = tokens * (arch.layers + 1) * per_layer
        comp["activations"] = int(act * CPU_ACT_SCALE)
        comp["logits"] = tokens * arch.vocab * (cd + 4 * LOGIT_FP32_COPIES)
        comp["overhead"] = CPU_RUNTIME_BYTES
    else:  # what CUDA keeps, counted from the pinned code (cuda_peak.py)
        comp["activations"], comp["logits"] = dynamic_peak(arch, cfg, per_layer, stack)
        comp["overhead"] = CUDA_CONTEXT_BYTES + slack_bytes(comp["activations"], comp["logits"])
    params = {"total": base_params + (trainable if cfg.method != "full" else 0), "trainable": trainable,
              "quantized": quantized}
    from .multi_device import per_device

    return per_device(arch, cfg, comp), params, matrices, paged  # what one device holds (multi_device.py)


def _limit(cfg: PlanConfig) -> tuple[int, str]:
    if cfg.gpu is not None:
        return parse_memory(cfg.gpu), f"--gpu {cfg.gpu}"
    if cfg.device == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's RAM"
        except (ValueError, OSError, AttributeError):
            return 16 * 2**30, "16 GiB (RAM unknown)"
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        index = torch.cuda.current_device()  # the GPU this process trains on (under DDP: this rank's), not GPU 0
        return int(torch.cuda.get_device_properties(index).total_memory), torch.cuda.get_device_name(index)
    return 24 * 2**30, "24 GiB (default; pass --gpu)"


def _verdict_of(total: int, limit: int) -> str:
    if total <= TIGHT * limit:
        return "fits"
    if total <= limit:
        return "tight"
    return "won't fit"


def _changes(cfg: PlanConfig) -> list[tuple[str, dict[str, Any]]]:
    """Candidate changes, cheapest first (the order the reason line prefers)."""
    out: list[tuple[str, dict[str, Any]]] = []
    if not cfg.gradient_checkpointing:
        out.append(("turn on gradient checkpointing", {"gradient_checkpointing": True}))
    if "8bit" not in cfg.optimizer:
        out.append(("use the paged_adamw_8bit optimizer", {"optimizer": "paged_adamw_8bit"}))
    b = cfg.batch_size // 2
    while b >= 1:
        k = math.ceil(cfg.batch_size / b)
        out.append((f"batch_size {b} (gradient_accumulation_steps {k} keeps the effective batch)", {"batch_size": b}))
        b //= 2
    s = cfg.seq_len // 2
    while s >= 64:
        out.append((f"seq_len {s}", {"seq_len": s}))
        s //= 2
    if cfg.method == "full":
        out.append(("switch to lora (frozen 16-bit base)", {"method": "lora", "bits": None}))
    if cfg.method != "qlora" and cfg.base_bits != 4:
        out.append(("switch to qlora (4-bit NF4 base)", {"method": "qlora", "bits": None, "quant": "nf4"}))
    if cfg.base_bits == 4 and not cfg.double_quant:
        out.append(("turn on double quantization", {"double_quant": True}))
    r = cfg.r // 2
    while cfg.method != "full" and r >= 1:
        out.append((f"r {r}", {"r": r}))
        r //= 2
    return out + _device_changes(cfg)


def offloaded_bytes(arch: Arch, cfg: PlanConfig) -> int:
    """Host RAM the offloaded shards take (all ranks together)."""
    from .multi_device import SHARDED

    whole = compute_components(arch, cfg.replace(gpus=1, strategy="ddp", cpu_offload=False))[0]
    return sum(whole[k] for k in SHARDED)


def _device_changes(cfg: PlanConfig) -> list[tuple[str, dict[str, Any]]]:
    """More devices or offload: last, as they need hardware (or host RAM) rather than a setting."""
    out: list[tuple[str, dict[str, Any]]] = []
    if cfg.strategy == "fsdp" and not cfg.cpu_offload:
        out.append(("add CPU offload", {"cpu_offload": True}))
    if cfg.strategy != "fsdp":
        n = max(2, cfg.gpus)
        out.append((f"{n} GPUs with FSDP", {"gpus": n, "strategy": "fsdp"}))
        out.append((f"{n} GPUs with FSDP and CPU offload", {"gpus": n, "strategy": "fsdp", "cpu_offload": True}))
    return out


def cheapest_change(arch: Arch, cfg: PlanConfig, limit: int) -> str | None:
    """The first single change (cheapest first) that fits, else the first cumulative set that does."""
    changes = _changes(cfg)

    def fits(c: PlanConfig) -> bool:
        comp = compute_components(arch, c)[0]
        if c.cpu_offload and offloaded_bytes(arch, c) > OFFLOAD_HOST_BYTES:
            return False  # the shards would not fit in a workstation's RAM either
        return sum(comp.values()) <= TIGHT * limit

    for text, delta in changes:
        if fits(cfg.replace(**delta)):
            return text

    acc, applied = cfg, {}
    for text, delta in changes:
        acc = acc.replace(**delta)
        applied[",".join(sorted(delta))] = (text, delta)  # a later batch/seq_len/r value replaces the earlier one
        if fits(acc):
            for key in reversed(list(applied)):  # drop what is not needed, most expensive first
                trial = {k: v for k, v in applied.items() if k != key}
                merged: dict[str, Any] = {}
                for _, d in trial.values():
                    merged.update(d)
                if fits(cfg.replace(**merged)):
                    applied = trial
            return " + ".join(t for t, _ in applied.values())
    return None


def _reason(plan: Plan) -> str:
    name, size = max(plan.components.items(), key=lambda kv: kv[1])
    big = f"biggest component: {name.replace('_', ' ')} ({human_bytes(size)})"
    used = f"{human_bytes(plan.total)} of {human_bytes(plan.limit_bytes)}"
    if plan.verdict == "fits":
        return f"{used}; {big}."
    fix = cheapest_change(plan.arch, plan.config, plan.limit_bytes)
    if fix is None:
        return f"{used}; {big}; nothing in the search fits (checkpointing, 8-bit optimizer, batch, FSDP, " \
               f"offload, seq_len, qlora, r) — it needs more memory."
    return f"{used}; {big}; cheapest change that fits: {fix}."


def build_plan(arch: Arch, cfg: PlanConfig, source: str, model: str | None = None) -> Plan:
    comp, params, matrices, paged = compute_components(arch, cfg)
    limit, limit_source = _limit(cfg)
    plan = Plan(model or arch.name, source, arch, cfg, comp, params, matrices, limit, limit_source, paged_bytes=paged)
    from .multi_device import host_ram

    plan.whole = compute_components(arch, cfg.replace(gpus=1, strategy="ddp", cpu_offload=False))[0]
    plan.host_ram = host_ram(arch, cfg, plan.whole, runtime=CPU_RUNTIME_BYTES if cfg.device == "cpu" else None)
    plan.verdict = _verdict_of(plan.total, limit)
    plan.reason = _reason(plan)
    plan.warnings = context_warnings(arch, cfg, plan.model)
    return plan


def context_warnings(arch: Arch, cfg: PlanConfig, model: str) -> list[str]:
    """seq_len past the model's context: memory is still planned, but positions past it were never trained."""
    if arch.context is None or cfg.seq_len <= arch.context:
        return []
    return [f"seq_len {cfg.seq_len} exceeds {model}'s context of {arch.context} tokens (max_position_embeddings): "
            f"positions past {arch.context} were never trained, so quality degrades or RoPE scaling is needed. "
            f"Use seq_len {arch.context} or less."]


def plan(model: str | None = None, **options: Any) -> Plan:
    """Predict training memory for ``model`` (table name, config.json/folder or hub id): the ``%qlora_plan`` twin.

    Options are :class:`qlora_nb.config.PlanConfig` fields (``gpu``, ``method``, ``quant``, ``double_quant``,
    ``r``, ``targets``, ``seq_len``, ``batch_size``, ``gradient_checkpointing``, ``optimizer``…).
    """
    if model is not None:
        options["model"] = model
    cfg = PlanConfig.from_options(options)
    arch, source = resolve_arch(cfg.model)
    return build_plan(arch, cfg, source, cfg.model)


def plan_loaded(loaded: dict[str, Any], *, label: str | None = None, measured: dict[str, int] | None = None,
                **options: Any) -> Plan:
    """The plan for a loaded model described by plain values (``loaded``: PlanConfig options read from the
    session by :func:`qlora_nb.engine.forecast.planning.session_plan_options`); ``options`` override them.

    ``label`` is the model name shown (the user's, not the resolved path); ``measured`` the ledger's bytes
    by component, shown beside the prediction.
    """
    opts = dict(loaded)
    if "method" in options and "bits" not in options:
        opts.pop("bits", None)
    opts.update(options)
    if opts.get("targets") and opts["targets"] != ["all-linear"]:
        names = {s.name for s in resolve_arch(opts["model"])[0].linears()}
        if set(opts["targets"]) >= names:  # peft resolved 'all-linear' into the names
            opts["targets"] = ["all-linear"]
    p = plan(**opts)
    if label is not None:
        p.model = label
    if measured is not None:
        p.measured = measured
    return p


def cheapest_fix_for(loaded: dict[str, Any], **options: Any) -> str | None:
    """For OOM messages: the planner's cheapest change for a loaded model (plain values) and run settings."""
    known = set(PlanConfig.field_names()) | set(PlanConfig.aliases())
    opts = {k: v for k, v in options.items() if k.replace("-", "_") in known}
    p = plan_loaded(loaded, **opts)
    return cheapest_change(p.arch, p.config, p.limit_bytes) if p.verdict != "fits" else None


def table() -> list[dict[str, Any]]:
    """The architectures table as rows (for display and tests)."""
    return [a.to_dict() for a in ARCHITECTURES.values()]
