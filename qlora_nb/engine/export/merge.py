"""Merging an adapter into a 16/32-bit copy of the base, with a memory check first and a logit check after.

Which base weights the update is added to matters. A QLoRA adapter was trained
against the *dequantized NF4* weights (every forward dequantizes them), not
against the original 16-bit checkpoint, so ``dequant(NF4) + scale*B@A`` is the
model the user actually trained and evaluated; adding the update to the
original weights would give a slightly different model (the quantization error
the adapter partly learned to compensate would come back). So the copy is read
from the checkpoint (embeddings, norms, biases at full precision), and every
quantized linear weight in it is replaced by the session's own dequantized
weight before peft merges. The session's model is only read, never changed.

After saving, :mod:`.merge_check` reads the folder back and compares weights and
logits; the folder is only swapped in when those checks pass.
"""

from __future__ import annotations

import gc
import json
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...command_options import MergeOptions
from ...config import DTYPE_ALIASES, DTYPES
from ...errors import QloraError
from ...fileio import atomic_dir
from ...quiet import quiet_libraries
from ...units import human_bytes
from ..model.adapters import is_trained, no_adapter
from .merge_check import FP32_LOGIT_TOLERANCE, MergeVerdict, _encode, _logits, verify_merge

if TYPE_CHECKING:
    from ..session import Session


DEFAULT_PROBES = (
    "The capital of France is",
    "Write a short poem about the sea.",
    "def add(a, b):\n    return",
)
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def _mib(n: float) -> str:
    """Every size a merge prints, in MiB or above: one unit system in the cell."""
    return human_bytes(n, floor="MiB")


@dataclass
class MergeResult:
    """What a merge wrote and how well the merged model reproduces the adapter model."""

    directory: Path
    dtype: str
    adapter: str
    device: str
    needed_bytes: int
    available_bytes: int
    breakdown: dict[str, int] = field(default_factory=dict)
    verified: bool = False
    max_abs_diff: float | None = None  # logits: merged (reloaded) vs the adapter model, both at `dtype`
    adapter_effect: float | None = None  # logits: adapter model vs base at `dtype`
    merged_vs_base: float | None = None
    effect_kept: float | None = None  # 1 - |merged - adapter| / |adapter - base| (Frobenius): 1 is a perfect merge
    max_abs_diff_session: float | None = None  # logits: merged vs the live session model (its compute dtype)
    weight_max_error: float | None = None  # max |saved - (W + scale*B@A)| over the adapted matrices
    modules_checked: int = 0
    probes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    size_bytes: int = 0  # the saved folder

    def record(self, verdict: MergeVerdict) -> None:
        """Take the passed checks' numbers (:func:`~.merge_check.verify_merge`); the merge is verified."""
        for f in fields(verdict):
            value = getattr(verdict, f.name)
            setattr(self, f.name, self.warnings + value if f.name == "warnings" else value)
        self.verified = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["directory"] = str(self.directory)
        return d

    def verdict(self) -> str:
        """The one pass/fail line read first (a failed check raises "merge verification FAILED: ..." instead)."""
        if not self.verified:
            return "merge NOT verified (--no-verify): the saved weights and logits were not checked"
        n = len(self.probes)
        if self.dtype == "float32":
            logits = f"max |Δlogit| {self.max_abs_diff:.1e} ≤ {FP32_LOGIT_TOLERANCE:.0e} on {n} prompts"
        else:  # 16-bit rounding moves logits; the bar is the per-weight bound and the effect kept
            logits = (f"max |Δlogit| {self.max_abs_diff:.1e} on {n} prompts (the adapter moves them by up to "
                      f"{self.adapter_effect:.2g}; {self.effect_kept:.1%} of its effect kept)")
        weights = (f"{self.modules_checked} merged matrices = W + scale·B@A within {self.dtype} rounding"
                   if self.modules_checked else "per-weight check skipped (DoRA)")
        mark = f"✓, {len(self.warnings)} warning(s) below" if self.warnings else "✓"
        return f"merge verified: {logits}; {weights} {mark}"

    def __str__(self) -> str:
        lines = [self.verdict(),
                 f"saved a {self.dtype} merge of adapter {self.adapter!r} to {self.directory} "
                 f"({_mib(self.size_bytes)}) in {self.seconds:.1f} s, needing {_mib(self.needed_bytes)} of "
                 f"{_mib(self.available_bytes)} free on {self.device}; "
                 "load it with transformers.AutoModelForCausalLM.from_pretrained"]
        if self.verified and self.max_abs_diff_session is not None:
            lines.append(f"  merged vs the session's live model (its compute dtype): max |Δlogit| "
                         f"{self.max_abs_diff_session:.1e}; largest weight error {self.weight_max_error or 0:.1e}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(str(self))


def normalize_dtype(dtype: str) -> str:
    d = DTYPE_ALIASES.get(str(dtype).strip().lower(), str(dtype).strip().lower())
    if d not in DTYPES:
        raise QloraError(f"{dtype!r} is not a merge dtype.", where="--dtype",
                         hint="Accepted: bf16, fp16, fp32 (bfloat16, float16, float32).")
    return d


def available_memory(device: str) -> int:
    """Free bytes where the copy would live: CUDA free memory, or available RAM (psutil)."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    import psutil  # MemAvailable from /proc/meminfo on Linux

    return int(psutil.virtual_memory().available)


def merge_memory(session: Session, adapter: str, dtype: str) -> dict[str, int]:
    """Bytes the merge holds at its peak: the base copy in ``dtype``, the adapter in fp32, one dequantized matrix."""
    led = session.ledger(measure=False)
    base_params = led.params["total"] - led.params["trainable"]
    adapter_params = sum(p.numel() for n, p in session.model.named_parameters()
                         if ".lora_" in n and f".{adapter}." in n)
    largest = 0
    for m in session.model.modules():
        w = getattr(m, "weight", None)
        if w is not None and hasattr(m, "in_features") and hasattr(m, "out_features"):
            largest = max(largest, m.in_features * m.out_features)
    return {
        "base_copy": base_params * _BYTES[dtype],
        "adapter": adapter_params * 4,
        "workspace": largest * 4 * 2,  # one dequantized fp32 matrix and its cast
    }


def _base_linear_weights(session: Session):
    """(module path in the plain model, dequantized weight) for every bitsandbytes linear of the session."""
    try:
        import bitsandbytes as bnb
        from peft.utils.integrations import dequantize_bnb_weight
    except ImportError:
        return
    root = session.model.get_base_model()
    for name, module in root.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            yield name.removesuffix(".base_layer"), dequantize_bnb_weight(module.weight)
        elif isinstance(module, bnb.nn.Linear8bitLt):
            yield name.removesuffix(".base_layer"), dequantize_bnb_weight(module.weight, state=module.state)


def build_peft_copy(session: Session, adapter: str, dtype: str, device: str):
    """A plain (unquantized) copy of the session's base in ``dtype`` with adapter ``adapter`` attached."""
    import copy

    import torch
    from peft import get_peft_model
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    from ..model.quantize import torch_dtype

    tdt = torch_dtype(dtype)
    plain = AutoModelForCausalLM.from_pretrained(
        str(session.model_path), dtype=tdt, device_map={"": device}, use_safetensors=not session.config.allow_pickle,
        trust_remote_code=session.config.trust_remote_code)
    with torch.no_grad():
        for name, weight in _base_linear_weights(session):
            target = plain.get_submodule(name).weight
            if tuple(target.shape) != tuple(weight.shape):
                raise QloraError(f"{name}: dequantized weight {tuple(weight.shape)} does not match the checkpoint "
                                 f"{tuple(target.shape)}.", where="merge",
                                 hint=f"Was {session.model_path} changed after the session loaded it?")
            target.copy_(weight.to(device=target.device, dtype=tdt))
            del weight
    cfg = copy.deepcopy(session.model.peft_config[adapter])
    cfg.inference_mode = True
    peft_copy = get_peft_model(plain, cfg, adapter_name=adapter)
    state = {k: v.detach().to(device) for k, v in get_peft_model_state_dict(session.model, adapter_name=adapter).items()}
    result = set_peft_model_state_dict(peft_copy, state, adapter_name=adapter)
    missing = [k for k in result.missing_keys if ".lora_" in k]
    if missing or result.unexpected_keys:
        raise QloraError(f"the adapter did not fit the 16-bit copy (missing {missing[:3]}, unexpected "
                         f"{list(result.unexpected_keys)[:3]}).", where="merge",
                         hint="This is a bug; rerun with --debug and report it.")
    peft_copy.eval()
    return peft_copy


def _pick_device(session: Session, need: int, available_bytes: int | None, device: str | None) -> tuple[str, int]:
    if device is not None:
        return device, available_bytes if available_bytes is not None else available_memory(device)
    if available_bytes is not None:
        return session.device, available_bytes
    if session.device.startswith("cuda"):
        free = available_memory(session.device)
        if free >= need:
            return session.device, free
    return "cpu", available_memory("cpu")


def merge(session: Session, directory: str | Path, dtype: str = MergeOptions.dtype,
          overwrite: bool = MergeOptions.overwrite, verify: bool = MergeOptions.verify, probes: list[str] | None = None,
          adapter: str | None = MergeOptions.adapter,
          available_bytes: int | None = None, device: str | None = None, verbose: bool = True) -> MergeResult:
    """Merge ``adapter`` (default: active) into a ``dtype`` copy of the base and save a plain transformers folder.

    ``available_bytes`` overrides the measured free memory (for tests and for
    leaving headroom); ``device`` forces where the copy is built (default: the
    session's GPU when the copy fits there, else CPU RAM).
    """
    from ..model.quantize import guard_cpu_repack

    started = time.perf_counter()
    dtype = normalize_dtype(dtype)
    name = adapter or session.active_adapter
    if name not in session.model.peft_config:
        raise no_adapter(name, session.model.peft_config, "--adapter")
    if not is_trained(session.model, name):
        raise QloraError(f"adapter {name!r} is untrained (every LoRA B matrix is zero), so a merge would only copy "
                         "the base model.", where="merge",
                         hint="Train it first (%%qlora_train), or load a trained one with %qlora_load_adapter.")
    from ...overwrite import check_target
    from ..arguments import protected_folders

    target = check_target(directory, overwrite=overwrite, protected=protected_folders(session))  # before any work
    parts = merge_memory(session, name, dtype)
    need = sum(parts.values())
    where, free = _pick_device(session, need, available_bytes, device)
    msg = (f"merge needs {_mib(need)} on {where} (a {dtype} copy of the base {_mib(parts['base_copy'])}"
           f" + adapter {_mib(parts['adapter'])} + workspace {_mib(parts['workspace'])}); "
           f"{_mib(free)} available")
    if verbose:
        print(msg)
    if need > free:
        raise QloraError(f"the merge will not fit: it needs {_mib(need)} on {where} but only "
                         f"{_mib(free)} is available.", where="merge",
                         hint="Free memory (%qlora_unload other sessions), merge in a smaller dtype "
                              "(--dtype bf16), or run the merge on a machine with more memory.")
    target.parent.mkdir(parents=True, exist_ok=True)
    disk = shutil.disk_usage(target.parent).free
    if parts["base_copy"] > disk:
        raise QloraError(f"the merged model needs about {_mib(parts['base_copy'])} of disk but "
                         f"{target.parent} has {_mib(disk)} free.", where="DIR",
                         hint="Choose a folder on a disk with more space.")
    probes = list(probes or DEFAULT_PROBES)
    result = MergeResult(target, dtype, name, where, need, free, parts, probes=probes)
    with atomic_dir(target, overwrite=overwrite, kind="merged model", protected=protected_folders(session)) as tmp, \
            quiet_libraries(("peft", "transformers")):  # no tqdm bars or save-time notes in the cell
        peft_copy = build_peft_copy(session, name, dtype, where)
        if verify:
            batch = _encode(session.tokenizer, probes, where)
            ref_adapter = _logits(peft_copy, batch)
            with peft_copy.disable_adapter():
                ref_base = _logits(peft_copy, batch)
        merged = merge_copy(peft_copy, name)
        merged.save_pretrained(str(tmp), safe_serialization=True)
        session.tokenizer.save_pretrained(str(tmp))
        del merged, peft_copy
        gc.collect()
        if verify:
            result.record(verify_merge(session, name, tmp, batch, ref_adapter, ref_base, dtype=dtype, device=where,
                                       probes=probes))
        result.seconds = time.perf_counter() - started
        result.size_bytes = sum(f.stat().st_size for f in tmp.iterdir() if f.is_file())
        (tmp / "qlora_nb_merge.json").write_text(json.dumps({
            "merged_from": {"adapter": name, "source": session.adapters.get(name, {}).get("source"),
                            "base_fingerprint": session.base_fingerprint,
                            "load_config": session.config.to_dict()},
            "result": {k: v for k, v in result.to_dict().items() if k != "directory"},
        }, indent=2, default=str), encoding="utf-8")
    guard_cpu_repack(session.model)
    if verbose:
        print(result)
    return result


def merge_copy(peft_copy, name: str):
    """peft's merge of ``name`` into the unquantized copy (its own function so tests can break it on purpose)."""
    return peft_copy.merge_and_unload(safe_merge=True, adapter_names=[name])


