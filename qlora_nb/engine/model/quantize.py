"""Load a model 4/8/16-bit with bitsandbytes and attach LoRA with peft.

bitsandbytes-specific code lives here (the peft style: gated, in one module),
including the guard against the CPU inference repack that silently cuts
backprop (see :func:`guard_cpu_repack`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...config import LoadConfig
from ...errors import QloraError


def torch_dtype(name: str):
    import torch

    from ...precision import canonical_dtype

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[canonical_dtype(name)]


def pick_device(cfg: LoadConfig) -> str:
    import torch

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise QloraError("device 'cuda' was asked for but no CUDA GPU is visible.", where="load option 'device'",
                         hint="Use device: auto or cpu.")
    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg.device


def gpu_capability(device: str) -> tuple[int, int] | None:
    """(major, minor) compute capability of ``device``'s GPU; None on CPU."""
    if not str(device).startswith("cuda"):
        return None
    import torch

    index = _indexed(device) if device == "cuda" else torch.device(device).index
    return tuple(torch.cuda.get_device_capability(index))  # type: ignore[return-value]


def resolve_dtype(cfg: LoadConfig, device: str) -> str:
    """Fix ``cfg.compute_dtype`` ('auto' -> a dtype for this hardware) before anything is loaded in it.

    The session keeps the resolved value, so the load dtype, bitsandbytes' compute dtype, the Trainer's
    bf16/fp16 flags and the planner all read one concrete dtype.
    """
    import warnings

    from ...precision import precision_warning, resolve_compute_dtype

    capability = gpu_capability(device)
    cfg.compute_dtype = resolve_compute_dtype(cfg.compute_dtype, device, capability)
    note = precision_warning(cfg.compute_dtype, device, capability)
    if note:
        warnings.warn(note, stacklevel=3)
    return cfg.compute_dtype


def bnb_config(cfg: LoadConfig):
    """``BitsAndBytesConfig`` for 4/8-bit, None for 16-bit (plain LoRA)."""
    if cfg.bits == 16:
        return None
    from transformers import BitsAndBytesConfig

    if cfg.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.quant,
        bnb_4bit_use_double_quant=cfg.double_quant,
        bnb_4bit_compute_dtype=torch_dtype(cfg.compute_dtype),
        bnb_4bit_quant_storage=cfg.quant_storage,
    )


def load_base(path: Path, cfg: LoadConfig, device: str):
    """The frozen base model from a local HF folder, quantized per ``cfg``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        hf_cfg = AutoConfig.from_pretrained(str(path), trust_remote_code=cfg.trust_remote_code)
    except ValueError as exc:
        raise QloraError(f"unsupported model config in {path}: {str(exc).splitlines()[0]}", where="MODEL",
                         hint="Pass trust_remote_code=True only if you trust the model's code.") from None
    from ...weightfiles import check_weight_files
    from .model_checks import check_model_kind

    check_model_kind(hf_cfg, Path(path))
    check_weight_files(Path(path))
    has_safetensors = any(Path(path).glob("*.safetensors"))
    if not has_safetensors and not cfg.allow_pickle:
        raise QloraError(f"{path} has no .safetensors weights.", where="MODEL",
                         hint="Only safetensors are read by default; pass allow_pickle=True to read .bin "
                              "pickles you trust.")
    kwargs: dict[str, Any] = {
        "dtype": torch_dtype(cfg.compute_dtype),
        "trust_remote_code": cfg.trust_remote_code,
        "use_safetensors": None if cfg.allow_pickle else True,
        # an explicit index: under DDP each rank has made its own GPU current, and accelerate refuses a
        # 4-bit model whose device map says plain "cuda" on any rank but 0
        "device_map": {"": _indexed(device)},
    }
    q = bnb_config(cfg)
    if q is not None:
        kwargs["quantization_config"] = q
    from ..scale.distributed import sharded_load_kwargs

    sharded = sharded_load_kwargs(cfg.bits)  # under train.py --fsdp: transformers shards the base (FSDP2)
    if sharded:
        kwargs.pop("device_map")
        kwargs.update(sharded)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except ValueError as exc:
        msg = str(exc).splitlines()[0]
        if "Unrecognized configuration" in msg or "does not support" in msg:
            raise QloraError(f"unsupported architecture {hf_cfg.model_type!r} for causal-LM fine-tuning.",
                             where="MODEL", hint="Use a decoder-only model (Llama, Mistral, Qwen2, Gemma, Phi…).") \
                from None
        raise
    for p in model.parameters():
        p.requires_grad_(False)
    guard_cpu_repack(model)
    return model


def _indexed(device: str):
    if device == "cuda":
        import torch

        return torch.cuda.current_device()
    return device


def lora_config(cfg: LoadConfig):
    from peft import LoraConfig

    targets: Any = cfg.targets
    if targets == ["all-linear"]:
        targets = "all-linear"
    return LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        use_dora=cfg.dora,
        use_rslora=cfg.rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )


def attach_lora(model, cfg: LoadConfig):
    """Wrap ``model`` in a peft model with fresh adapters named ``cfg.adapter_name``."""
    import torch
    from peft import get_peft_model

    from .model_checks import check_targets, warn_rank

    check_targets(model, cfg.targets)
    torch.manual_seed(cfg.seed)
    try:
        peft_model = get_peft_model(model, lora_config(cfg), adapter_name=cfg.adapter_name)
    except ValueError as exc:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__.startswith("Linear")})
        raise QloraError(f"LoRA targets {cfg.targets} match no module ({str(exc).splitlines()[0]}).",
                         where="load option 'targets'",
                         hint=f"Use 'all-linear' or some of: {', '.join(names)}.") from None
    warn_rank(peft_model, cfg.r, cfg.adapter_name)
    # Adapters train in fp32 (the QLoRA recipe): stable updates, compute still in compute_dtype.
    for p in peft_model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return peft_model


def guard_cpu_repack(model) -> int:
    """Stop bitsandbytes' CPU inference repack, and undo one that already happened.

    On CPU with AVX512-BF16, the first eval-mode forward of a ``Linear4bit``
    repacks its weight for a fused inference kernel that has no autograd: every
    later training forward returns no gradient to its input, silently, so
    generate-then-train trains only the last layers. The repack also rewrites
    the absmax to bf16 without double quantization, which changes the memory
    the ledger reports. Turning the feature off keeps one layout for inference
    and training. Returns how many layers had to be unpacked.
    """
    try:
        import bitsandbytes as bnb
        from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse
    except ImportError:
        return 0
    unpacked = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            qs = getattr(module.weight, "quant_state", None)
            if qs is not None and getattr(qs, "packing_format_for_cpu", False):
                module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                    module.weight.data, qs
                )
                unpacked += 1
    return unpacked
