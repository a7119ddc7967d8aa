"""Which compute dtype to use on which hardware (pure: the caller passes the device and its capability).

``compute_dtype: auto`` (the default) resolves to:

- bfloat16 on CPUs (oneDNN runs bf16 matmuls natively, measured ~7x faster than fp32 on the 2-core AMX CPU)
  and on GPUs of compute capability >= 8.0 (Ampere: A100, A10, L4, RTX 30xx and newer);
- float16 on older GPUs (T4 = sm75, V100 = sm70): they have no bf16 tensor cores, and
  ``torch.cuda.is_bf16_supported()`` can answer True there because bf16 is emulated, slowly. The capability
  major version is the test Unsloth and others use too;
- float32 only when asked for.

The Trainer's ``bf16``/``fp16`` flags, the load dtype and bitsandbytes' ``bnb_4bit_compute_dtype`` all
follow the one resolved value (:func:`trainer_precision`). fp16 training needs a loss scaler, which the
Trainer's ``fp16=True`` provides (torch's GradScaler through accelerate), and fp32 trainable weights (the
scaler refuses to unscale fp16 gradients); the adapters are created and loaded in fp32, the plain peft
QLoRA recipe.
"""

from __future__ import annotations

DTYPES = ("bfloat16", "float16", "float32")
ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
BF16_MIN_MAJOR = 8  # Ampere: the first GPUs with bf16 tensor cores


def canonical_dtype(name: str) -> str:
    """'bf16' -> 'bfloat16' etc.; 'auto' and unknown names pass through unchanged."""
    key = str(name).strip().lower()
    return ALIASES.get(key, key)


def resolve_compute_dtype(requested: str, device: str, capability: tuple[int, int] | None = None) -> str:
    """The concrete compute dtype for ``requested`` ('auto' or a dtype) on ``device`` ('cpu', 'cuda', 'cuda:1').

    ``capability`` is the GPU's (major, minor) compute capability; ignored on CPU. An unknown capability on
    CUDA counts as old (fp16): it works everywhere, while bf16 on a pre-Ampere GPU is emulated.
    """
    dtype = canonical_dtype(requested)
    if dtype != "auto":
        return dtype
    if not str(device).startswith("cuda"):
        return "bfloat16"
    if capability is not None and capability[0] >= BF16_MIN_MAJOR:
        return "bfloat16"
    return "float16"


def precision_warning(dtype: str, device: str, capability: tuple[int, int] | None) -> str | None:
    """A sentence when an explicit dtype is a poor fit for the GPU (bf16 emulated below sm80), else None."""
    if str(device).startswith("cuda") and dtype == "bfloat16" and capability is not None \
            and capability[0] < BF16_MIN_MAJOR:
        return (f"compute_dtype bfloat16 on a GPU of compute capability {capability[0]}.{capability[1]} is emulated "
                f"and slow; compute_dtype auto picks float16 (with a loss scaler) there.")
    return None


def trainer_precision(dtype: str, device: str) -> dict[str, bool]:
    """TrainingArguments' ``bf16``/``fp16`` flags for a resolved compute dtype.

    bf16 autocast also runs on CPU (the Trainer's ``use_cpu`` path); fp16 mixed precision (loss scaling) is
    CUDA-only, so an explicit fp16 on CPU trains without autocast.
    """
    on_cuda = str(device).startswith("cuda")
    return {"bf16": dtype == "bfloat16", "fp16": dtype == "float16" and on_cuda}
