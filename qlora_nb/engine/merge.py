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

Peer projects' worst merge bugs are silent: a merge into 4-bit weights that is
re-quantized away, or a saved base where the merged model was meant. So after
saving, the folder is loaded back with plain transformers and its logits are
compared with the adapter model and with the base on probe prompts; the folder
is only swapped in when the check passes.
"""

from __future__ import annotations

import gc
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import DTYPE_ALIASES, DTYPES
from ..errors import QloraError, did_you_mean
from ..fileio import atomic_dir
from ..memory.ledger import human_bytes

if TYPE_CHECKING:
    from .session import Session

DEFAULT_PROBES = (
    "The capital of France is",
    "Write a short poem about the sea.",
    "def add(a, b):\n    return",
)
# An fp32 merge must reproduce the adapter model's logits within this (the bar; measured: ~1e-6).
FP32_LOGIT_TOLERANCE = 1e-2
# Per-weight bound |saved - (W + scale*B@A)| <= EPS*(|W + dW| + |dW|) + FLOOR: peft's merge rounds twice (dW to
# the weight dtype, then the sum), each by at most 2**-p relative (p = significand bits: bf16 8, fp16 11); EPS is
# twice that. fp32 leaves room for a different matmul summation order.
WEIGHT_EPS = {"float32": 2.0**-20, "bfloat16": 2.0**-7, "float16": 2.0**-10}
WEIGHT_FLOOR = {"float32": 1e-7, "bfloat16": 1e-30, "float16": 1e-7}
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["directory"] = str(self.directory)
        return d

    def __str__(self) -> str:
        lines = [f"merged adapter {self.adapter!r} into a {self.dtype} copy of the base -> {self.directory}",
                 f"  memory: needed {human_bytes(self.needed_bytes)} on {self.device}, "
                 f"available {human_bytes(self.available_bytes)}"]
        if self.verified:
            lines += [
                f"  weights: {self.modules_checked} merged matrices equal W + scale*B@A within rounding "
                f"(max error {self.weight_max_error:.3g})",
                f"  logits on {len(self.probes)} probes: max |merged - adapter model| = {self.max_abs_diff:.3g}; "
                f"the adapter moves logits by up to {self.adapter_effect:.3g}; effect kept {self.effect_kept:.1%}",
            ]
            if self.max_abs_diff_session is not None:
                lines.append(f"  vs the session's live model (its compute dtype): {self.max_abs_diff_session:.3g}")
        else:
            lines.append("  not verified (--no-verify)")
        lines += [f"  warning: {w}" for w in self.warnings]
        lines.append(f"  took {self.seconds:.1f} s; load it with transformers.AutoModelForCausalLM.from_pretrained")
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
    """Free bytes where the copy would live: CUDA free memory, or MemAvailable from /proc/meminfo."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil  # not on Linux: fall back to psutil (a jupyter dependency)

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

    from .quantize import torch_dtype

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


def _encode(tokenizer, probes: list[str], device: str):
    enc = tokenizer(list(probes), return_tensors="pt", padding=True)
    return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}


def _logits(model, batch) -> Any:
    """fp32 logits at the real (non-padding) positions only."""
    import torch

    with torch.no_grad():
        out = model(**batch).logits.float()
    mask = batch["attention_mask"].bool()
    return out[mask].cpu()


def _session_logits(session: Session, adapter: str, probes: list[str]):
    """Logits of the live session model with ``adapter`` active, restoring its mode and active adapter."""
    from .quantize import guard_cpu_repack

    model = session.model
    was_training, before = model.training, session.active_adapter
    try:
        guard_cpu_repack(model)
        model.eval()
        if before != adapter:
            model.set_adapter(adapter)
        return _logits(model, _encode(session.tokenizer, probes, session.device))
    finally:
        if before != adapter:
            model.set_adapter(before)
        model.train(was_training)


def _max_diff(a, b) -> float:
    return float((a - b).abs().max().item())


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


def merge(session: Session, directory: str | Path, dtype: str = "bfloat16", overwrite: bool = False,
          verify: bool = True, probes: list[str] | None = None, adapter: str | None = None,
          available_bytes: int | None = None, device: str | None = None, verbose: bool = True) -> MergeResult:
    """Merge ``adapter`` (default: active) into a ``dtype`` copy of the base and save a plain transformers folder.

    ``available_bytes`` overrides the measured free memory (for tests and for
    leaving headroom); ``device`` forces where the copy is built (default: the
    session's GPU when the copy fits there, else CPU RAM).
    """
    from .export import _is_trained
    from .quantize import guard_cpu_repack

    started = time.perf_counter()
    dtype = normalize_dtype(dtype)
    name = adapter or session.active_adapter
    if name not in session.model.peft_config:
        raise QloraError(f"no adapter named {name!r} in this session.", where="--adapter",
                         hint=did_you_mean(name, session.model.peft_config))
    if not _is_trained(session.model, name):
        raise QloraError(f"adapter {name!r} is untrained (every LoRA B matrix is zero), so a merge would only copy "
                         "the base model.", where="merge",
                         hint="Train it first (%%qlora_train), or load a trained one with %qlora_load_adapter.")
    target = Path(directory).expanduser()
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not overwrite:
        raise QloraError(f"{str(target)!r} already exists and is not empty.", where="DIR",
                         hint="Pass --overwrite (overwrite=True) to replace it, or choose another folder.")
    parts = merge_memory(session, name, dtype)
    need = sum(parts.values())
    where, free = _pick_device(session, need, available_bytes, device)
    msg = (f"merge needs {human_bytes(need)} on {where} (a {dtype} copy of the base {human_bytes(parts['base_copy'])}"
           f" + adapter {human_bytes(parts['adapter'])} + workspace {human_bytes(parts['workspace'])}); "
           f"{human_bytes(free)} available")
    if verbose:
        print(msg)
    if need > free:
        raise QloraError(f"the merge will not fit: it needs {human_bytes(need)} on {where} but only "
                         f"{human_bytes(free)} is available.", where="merge",
                         hint="Free memory (%qlora_unload other sessions), merge in a smaller dtype "
                              "(--dtype bf16), or run the merge on a machine with more memory.")
    target.parent.mkdir(parents=True, exist_ok=True)
    disk = shutil.disk_usage(target.parent).free
    if parts["base_copy"] > disk:
        raise QloraError(f"the merged model needs about {human_bytes(parts['base_copy'])} of disk but "
                         f"{target.parent} has {human_bytes(disk)} free.", where="DIR",
                         hint="Choose a folder on a disk with more space.")
    probes = list(probes or DEFAULT_PROBES)
    result = MergeResult(target, dtype, name, where, need, free, parts, probes=probes)
    with atomic_dir(target, overwrite=overwrite) as tmp:
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
            check_merged_weights(session, name, tmp, result)
            check_merged_logits(session, name, tmp, batch, ref_adapter, ref_base, result)
            result.verified = True
        result.seconds = time.perf_counter() - started
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


class _SavedTensors:
    """Read single tensors from a saved (possibly sharded) safetensors folder without loading the model."""

    def __init__(self, folder: Path) -> None:
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            self.files = {k: folder / v for k, v in json.loads(index.read_text())["weight_map"].items()}
        else:
            from safetensors import safe_open

            single = folder / "model.safetensors"
            with safe_open(str(single), framework="pt") as fh:
                self.files = dict.fromkeys(fh.keys(), single)

    def get(self, key: str):
        from safetensors import safe_open

        if key not in self.files:
            return None
        with safe_open(str(self.files[key]), framework="pt") as fh:
            return fh.get_tensor(key)


def _expected_delta(module, name: str, cfg):
    """scale * B @ A from the adapter's own numbers and config (independent of peft's merge code)."""
    import math

    a = module.lora_A[name].weight.detach().float().cpu()
    b = module.lora_B[name].weight.detach().float().cpu()
    r = a.shape[0]
    scale = cfg.lora_alpha / (math.sqrt(r) if cfg.use_rslora else r)
    delta = (b @ a) * scale
    return delta.T if getattr(cfg, "fan_in_fan_out", False) else delta


def check_merged_weights(session: Session, name: str, folder: Path, result: MergeResult) -> None:
    """Every adapted matrix in the saved folder must equal dequant(W) + scale*B@A within rounding, and not W.

    This is the exact test for the "merge did nothing" bug: it reads what was
    written, one tensor at a time, so it also catches a correct merge that was
    not the thing saved.
    """
    import torch
    from peft.utils.integrations import dequantize_bnb_weight

    from .quantize import torch_dtype

    cfg = session.model.peft_config[name]
    if getattr(cfg, "use_dora", False):
        result.warnings.append("DoRA adapter: the per-weight check is skipped (logits are still compared).")
        return
    tdt = torch_dtype(result.dtype)
    saved = _SavedTensors(folder)
    changed, worst, checked, bad = 0, 0.0, 0, None
    for path, module in session.model.get_base_model().named_modules():
        if not hasattr(module, "lora_A") or name not in module.lora_A:
            continue
        key = f"{path}.weight"
        got = saved.get(key)
        if got is None:
            raise QloraError(f"the merged folder has no tensor {key!r}.", where="merge verification",
                             hint="Nothing was saved. This is a bug; rerun with --debug and report it.")
        base_w = module.get_base_layer().weight
        state = getattr(module.get_base_layer(), "state", None)
        w = (dequantize_bnb_weight(base_w, state=state) if type(base_w).__name__ in ("Params4bit", "Int8Params")
             else base_w.detach()).float().cpu()
        delta = _expected_delta(module, name, cfg)
        expected = w + delta
        got = got.float()
        err = (got - expected).abs()
        bound = WEIGHT_EPS[result.dtype] * (expected.abs() + delta.abs()) + WEIGHT_FLOOR[result.dtype]
        if bad is None and (err > bound).any():
            bad = (key, err.max().item())
        worst = max(worst, err.max().item())
        changed += int(not torch.equal(got, w.to(tdt).float()))
        checked += 1
    result.weight_max_error, result.modules_checked = worst, checked
    if checked and not changed:
        lost = (" In 16-bit, updates smaller than the weights' rounding step vanish; merge with --dtype fp32."
                if result.dtype != "float32" else "")
        raise QloraError(f"the merged model equals the base model: none of the {checked} adapted matrices changed "
                         "(the merge did nothing).", where="merge verification", hint="Nothing was saved." + lost)
    if bad is not None:
        raise QloraError(f"merged weight {bad[0]} differs from W + scale*B@A by up to {bad[1]:.3g}, more than "
                         f"{result.dtype} rounding allows.", where="merge verification",
                         hint="Nothing was saved. Check the adapter's scaling (alpha/r) and rerun with --debug.")


def check_merged_logits(session: Session, name: str, folder: Path, batch, ref_adapter, ref_base,
                        result: MergeResult) -> None:
    """Reload the folder with plain transformers; compare its logits with the adapter model and the base."""
    from transformers import AutoModelForCausalLM

    from .quantize import torch_dtype

    reloaded = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch_dtype(result.dtype),
                                                    device_map={"": result.device}, use_safetensors=True)
    reloaded.eval()
    merged = _logits(reloaded, batch)
    del reloaded
    gc.collect()
    result.max_abs_diff = _max_diff(merged, ref_adapter)
    result.adapter_effect = _max_diff(ref_adapter, ref_base)
    result.merged_vs_base = _max_diff(merged, ref_base)
    effect_norm = float((ref_adapter - ref_base).norm())
    result.effect_kept = 1.0 - float((merged - ref_adapter).norm()) / effect_norm if effect_norm else 1.0
    result.max_abs_diff_session = _max_diff(merged, _session_logits(session, name, result.probes))
    if result.adapter_effect > 0 and result.merged_vs_base <= 1e-3 * result.adapter_effect:
        raise QloraError(f"the merged model's logits equal the base model's (max difference {result.merged_vs_base:.3g}"
                         f", while the adapter changes them by up to {result.adapter_effect:.3g}): the merge did "
                         "nothing.", where="merge verification", hint="Nothing was saved.")
    if result.dtype == "float32" and result.max_abs_diff > FP32_LOGIT_TOLERANCE:
        raise QloraError(f"the merged model's logits differ from the adapter model's by up to "
                         f"{result.max_abs_diff:.3g} (tolerance {FP32_LOGIT_TOLERANCE:g} in float32).",
                         where="merge verification", hint="Nothing was saved. Rerun with --debug and report it.")
    if result.effect_kept < 0.5:
        result.warnings.append(
            f"the {result.dtype} merged model reproduces only {result.effect_kept:.0%} of the adapter's effect on the "
            "probes: rounding W + scale*B@A (and the matmuls) to 16 bits loses small updates. Merge with --dtype fp32 "
            "for an exact copy.")
