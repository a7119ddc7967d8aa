"""Adapters in and out of a session: save as a PEFT folder, load back with checks.

A saved adapter is a plain PEFT folder (``adapter_config.json`` +
``adapter_model.safetensors``) that ``peft.PeftModel.from_pretrained`` loads
without qlora_nb, plus ``qlora_nb.json`` (the load/train settings, the base
model's fingerprint and the ledger) and a model card. Only safetensors are
written; pickles are read only on explicit opt-in, because unpickling runs code.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import QloraError
from ...fileio import atomic_dir
from ...naming import RESERVED_ADAPTER_NAMES, check_adapter_name
from ..model.adapters import flatten_adapter_folder, is_trained, no_adapter

if TYPE_CHECKING:
    from ..session import Session

SAFE_WEIGHTS = "adapter_model.safetensors"
PICKLE_WEIGHTS = "adapter_model.bin"
CONFIG = "adapter_config.json"
TOOLKIT_FILE = "qlora_nb.json"
FORMAT_VERSION = 1
_FINGERPRINT_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")


# ------------------------------------------------------------------- saving
def save_adapter(session: Session, directory: str | Path, overwrite: bool = False,
                 adapter: str | None = None) -> Path:
    """Write adapter ``adapter`` (default: the active one) as a standard PEFT folder plus qlora_nb.json and README.md.

    The folder is built under a temporary name and swapped in whole, so an
    interrupt leaves the previous folder or the new one, never a torn one.
    """
    name = adapter or session.active_adapter
    if name not in session.model.peft_config:
        raise no_adapter(name, session.model.peft_config, "--adapter")
    from ...quiet import quiet_libraries
    from ..arguments import protected_folders
    from ..scale.distributed import adapter_save_kwargs

    target = Path(directory).expanduser()
    with atomic_dir(target, overwrite=overwrite, kind="adapter", protected=protected_folders(session)) as tmp, \
            quiet_libraries(("peft", "transformers")):  # peft's save-time notes are not the user's to act on
        session.model.save_pretrained(str(tmp), selected_adapters=[name], safe_serialization=True,
                                   **adapter_save_kwargs(session.model))  # a sharded base: rank 0 alone
        flatten_adapter_folder(tmp, name)
        if not (tmp / SAFE_WEIGHTS).is_file():
            raise QloraError(f"peft wrote no {SAFE_WEIGHTS} for adapter {name!r}.", where="save")
        meta = toolkit_metadata(session, name)
        (tmp / TOOLKIT_FILE).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
        (tmp / "README.md").write_text(model_card(session, name, meta), encoding="utf-8")
    session.adapters.setdefault(name, {})["saved_to"] = str(target)
    return target


def saved_summary(path: Path, name: str) -> str:
    """The line %qlora_save prints: what was written where, its size in MiB, and how to load it back."""
    from ...units import human_bytes

    size = sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())
    return (f"saved adapter {name!r} to {path} ({human_bytes(size, floor='MiB')}); reload with "
            f"%qlora_load_adapter {path} or peft.PeftModel.from_pretrained(base, {str(path)!r})")


def _last_run(session: Session):
    return session.runs[-1] if session.runs else None


def _train_config_dict(run) -> dict[str, Any] | None:
    cfg = getattr(run, "config", None) if run is not None else None
    if cfg is None:
        return None
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


def _final_losses(run) -> dict[str, float | None]:
    """Last train loss and last eval loss from a TrainResult's history (None when absent)."""
    out: dict[str, float | None] = {"train_loss": None, "eval_loss": None, "steps": None}
    history = list(getattr(run, "history", None) or []) if run is not None else []
    for row in history:
        if row.get("loss") is not None:
            out["train_loss"] = float(row["loss"])
        if row.get("eval_loss") is not None:
            out["eval_loss"] = float(row["eval_loss"])
        if row.get("step") is not None:
            out["steps"] = int(row["step"])
    metrics = dict(getattr(run, "metrics", None) or {}) if run is not None else {}
    for key in ("train_loss", "eval_loss"):
        if out[key] is None and isinstance(metrics.get(key), (int, float)):
            out[key] = float(metrics[key])
    return out


def toolkit_metadata(session: Session, name: str) -> dict[str, Any]:
    """What qlora_nb.json holds: enough to reload, retrain (export) and check the base model."""
    from ..._version import __version__

    run = _last_run(session)
    ledger = session.ledger(measure=False)
    info = session.adapters.get(name, {})
    return {
        "format": FORMAT_VERSION,
        "qlora_nb_version": __version__,
        "adapter_name": name,
        "source": info.get("source"),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_config": {**session.config.to_dict(), "adapter": None},
        "train_config": _train_config_dict(run),
        "template": getattr(session.template, "text", session.template),
        "final": _final_losses(run),
        "metrics": {k: v for k, v in dict(getattr(run, "metrics", None) or {}).items()
                    if isinstance(v, (int, float, str))} if run is not None else {},
        "base_fingerprint": session.base_fingerprint,
        "ledger": {"components": ledger.as_dict(), "params": dict(ledger.params)},
    }


def model_card(session: Session, name: str, meta: dict[str, Any]) -> str:
    """A README.md a person can read on the hub or in the folder: base, settings, data, losses, ledger."""
    from ...units import human_bytes

    cfg = session.config
    fp = session.base_fingerprint or {}
    base = fp.get("name_or_path") or cfg.model
    quant = (f"{cfg.bits}-bit {cfg.quant.upper()}" + (" + double quantization" if cfg.double_quant else "")
             if cfg.bits == 4 else f"{cfg.bits}-bit")
    train = meta.get("train_config") or {}
    final = meta.get("final") or {}
    lines = [
        "---", "library_name: peft", f"base_model: {base}", "tags: [lora, qlora, qlora_nb]", "---", "",
        f"# LoRA adapter `{name}` for {base}", "",
        "Trained with [qlora_nb](https://pypi.org/project/qlora_nb/). A standard PEFT adapter:", "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM",
        f"base = AutoModelForCausalLM.from_pretrained({base!r})",
        "model = PeftModel.from_pretrained(base, 'THIS_FOLDER')",
        "```", "",
        "## Settings", "",
        "| setting | value |", "|---|---|",
        f"| base model | {base} ({fp.get('model_type')}, {fp.get('num_hidden_layers')} layers, "
        f"hidden {fp.get('hidden_size')}) |",
        f"| base weights during training | {quant}, compute {cfg.compute_dtype} |",
        f"| LoRA | r={cfg.r}, alpha={cfg.alpha:g} (scale {_scale(cfg):.4g}), dropout={cfg.dropout:g}, "
        f"targets={','.join(cfg.targets)}{', DoRA' if cfg.dora else ''}{', rsLoRA' if cfg.rslora else ''} |",
    ]
    if train:
        data, metrics = train.get("data"), meta.get("metrics") or {}
        rows = (f" ({metrics['train_rows']} training rows, {metrics.get('val_rows', 0)} held out)"
                if isinstance(metrics.get("train_rows"), int) else "")
        lines += [
            f"| data | {data}{rows} |",
            f"| template | {str(train.get('template') or meta.get('template') or 'chat / prompt-completion')!r} |",
            f"| schedule | lr {train.get('learning_rate')}, {train.get('lr_scheduler_type')}, "
            f"batch {train.get('batch_size')} x {train.get('gradient_accumulation_steps')}, "
            f"max_steps {train.get('max_steps')}, epochs {train.get('epochs')}, cutoff_len {train.get('cutoff_len')} |",
        ]
    else:
        lines.append("| data | not trained in this session (loaded or fresh adapter) |")
    if final.get("train_loss") is not None or final.get("eval_loss") is not None:
        fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        lines.append(f"| final losses | train {fmt(final.get('train_loss'))}, eval {fmt(final.get('eval_loss'))} "
                     f"after {final.get('steps')} steps |")
    comps = (meta.get("ledger") or {}).get("components") or {}
    params = (meta.get("ledger") or {}).get("params") or {}
    lines += ["", "## Memory ledger (bytes by component, measured from the tensors)", "",
              "| component | bytes | |", "|---|---:|---:|"]
    for key, value in comps.items():
        lines.append(f"| {key} | {value:,} | {human_bytes(value)} |")
    if session.peak_rss:
        lines += ["", f"Peak process memory during the last training run: {human_bytes(session.peak_rss)}."]
    if params:
        lines += ["", f"Parameters: {params.get('total', 0):,} total, {params.get('trainable', 0):,} trainable, "
                      f"{params.get('quantized', 0):,} quantized."]
    return "\n".join(lines) + "\n"


def _scale(cfg) -> float:
    return cfg.alpha / (cfg.r ** 0.5 if cfg.rslora else cfg.r)


# ------------------------------------------------------------------ loading
def check_adapter_dir(directory: str | Path, allow_pickle: bool = False) -> Path:
    """The adapter folder, after checking its files exist and its weights may be read."""
    path = Path(directory).expanduser()
    if not path.exists():
        raise QloraError(f"adapter folder {str(path)!r} does not exist.", where="adapter",
                         hint="Pass a folder written by %qlora_save / Session.save (adapter_config.json + "
                              "adapter_model.safetensors).")
    if not path.is_dir():
        raise QloraError(f"{str(path)!r} is a file, not an adapter folder.", where="adapter",
                         hint="Pass the folder that holds adapter_config.json.")
    if not (path / CONFIG).is_file():
        raise QloraError(f"{str(path)!r} has no {CONFIG}, so it is not a PEFT adapter folder.", where="adapter",
                         hint="Pass a folder written by %qlora_save / Session.save or peft's save_pretrained.")
    if (path / SAFE_WEIGHTS).is_file():
        from ...weightfiles import check_safetensors_file

        check_safetensors_file(path / SAFE_WEIGHTS, "adapter")  # a torn copy is named, not a deserializer's error
    else:
        if (path / PICKLE_WEIGHTS).is_file():
            if not allow_pickle:
                raise QloraError(f"{str(path)!r} holds only a pickle ({PICKLE_WEIGHTS}); only safetensors are "
                                 "read by default because unpickling can run code.", where="adapter",
                                 hint="Pass --allow-pickle (allow_pickle=True) if you trust the file.")
        else:
            raise QloraError(f"{str(path)!r} has no {SAFE_WEIGHTS}.", where="adapter",
                             hint="Save the adapter with %qlora_save (safetensors).")
    return path


def read_toolkit_metadata(path: Path) -> dict[str, Any]:
    f = Path(path) / TOOLKIT_FILE
    if not f.is_file():
        return {}
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise QloraError(f"{f} is not valid JSON ({exc}).", where="adapter",
                         hint="Re-save the adapter, or delete qlora_nb.json to load it as a plain PEFT adapter.") \
            from None


def _model_label(fp: dict[str, Any] | None, fallback: str | None = None) -> str:
    fp = fp or {}
    name = fp.get("name_or_path") or fp.get("path") or fallback or "unknown model"
    dims = ", ".join(f"{k}={fp[k]}" for k in _FINGERPRINT_KEYS if fp.get(k) is not None)
    return f"{name} ({dims})" if dims else str(name)


def _adapter_base_label(path: Path, meta: dict[str, Any]) -> str:
    if meta.get("base_fingerprint"):
        return _model_label(meta["base_fingerprint"])
    try:
        cfg = json.loads((path / CONFIG).read_text(encoding="utf-8"))
        return str(cfg.get("base_model_name_or_path") or "an unknown base model")
    except (OSError, ValueError):
        return "an unknown base model"


def check_base_matches(path: Path, meta: dict[str, Any], base_fp: dict[str, Any]) -> None:
    """Refuse an adapter whose qlora_nb.json says it was trained for a different architecture/size."""
    saved = meta.get("base_fingerprint") or {}
    if not saved or not base_fp:
        return
    diffs = [k for k in _FINGERPRINT_KEYS if saved.get(k) is not None and base_fp.get(k) is not None
             and saved.get(k) != base_fp.get(k)]
    if diffs:
        raise _wrong_base(path, _model_label(saved), _model_label(base_fp), ", ".join(diffs) + " differ")


def _wrong_base(path: Path, adapter_base: str, session_base: str, why: str) -> QloraError:
    return QloraError(f"the adapter in {str(path)!r} was made for {adapter_base}, but the loaded base model is "
                      f"{session_base} ({why}).", where="adapter",
                      hint="Load the base model the adapter was trained on (see its qlora_nb.json / README.md).")


def _peft_load_errors(path: Path, meta: dict[str, Any], base_fp: dict[str, Any]):
    """Context manager that turns peft's shape/key errors into one QloraError naming both models."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        try:
            yield
        except QloraError:
            raise
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()
            detail = next((ln.strip() for ln in first if "size mismatch" in ln), first[0] if first else "")
            raise _wrong_base(path, _adapter_base_label(path, meta), _model_label(base_fp),
                              f"peft could not load it: {detail[:300]}") from None

    return ctx()


def safe_adapter_name(raw: str) -> str:
    """Module dicts refuse dots; notebook users type folder names such as ``runs/v1.2``."""
    name = re.sub(r"\W", "_", raw).strip("_") or "adapter"
    return name if not name[0].isdigit() else f"a_{name}"


def _check_keys_loaded(model, path: Path, name: str, meta: dict[str, Any], base_fp: dict[str, Any]) -> None:
    """peft loads adapters with strict=False: a file whose modules all miss the base loads nothing, silently."""
    import torch
    from safetensors import safe_open

    weights = path / SAFE_WEIGHTS
    if not weights.is_file():
        return
    with safe_open(str(weights), framework="pt") as fh:
        keys = list(fh.keys())
    lora_layers = [m for m in model.modules() if hasattr(m, "lora_A") and name in getattr(m, "lora_A", {})]
    if keys and not lora_layers:
        raise _wrong_base(path, _adapter_base_label(path, meta), _model_label(base_fp),
                          "none of its target modules exists in this model")
    nonzero = any(torch.count_nonzero(m.lora_B[name].weight).item() for m in lora_layers if name in m.lora_B)
    saved_nonzero = False
    with safe_open(str(weights), framework="pt") as fh:
        for k in keys:
            if "lora_B" in k and torch.count_nonzero(fh.get_tensor(k)).item():
                saved_nonzero = True
                break
    if saved_nonzero and not nonzero:
        raise _wrong_base(path, _adapter_base_label(path, meta), _model_label(base_fp),
                          "its weight names match no module of this model")


def load_adapter(session: Session, directory: str | Path, name: str | None = None,
                 allow_pickle: bool = False) -> str:
    """Load a saved adapter into the session as ``name`` (default: the folder name) and return the name.

    The active adapter stays active, so loading never changes what a running
    comparison or the next training run uses; the one exception is a session
    whose active adapter is the fresh, never-trained one made by ``load()``,
    which switches to the loaded adapter because that is the only useful one.
    """
    from ..model.quantize import guard_cpu_repack

    path = check_adapter_dir(directory, allow_pickle)
    meta = read_toolkit_metadata(path)
    check_base_matches(path, meta, session.base_fingerprint)
    if name is not None:
        name = check_adapter_name(name, "--name")  # typed by the user: refused, never silently renamed
    else:
        name = safe_adapter_name(path.resolve().name)  # derived from the folder name
        if name.lower() in RESERVED_ADAPTER_NAMES:
            raise QloraError(f"the adapter folder is named {path.name!r}, which is reserved for the base model.",
                             where="--name", hint="Give the adapter a name: --name my_adapter (name='my_adapter').")
    if name in session.model.peft_config:
        raise QloraError(f"the session already has an adapter named {name!r}.", where="--name",
                         hint=f"Pick another name (loaded: {', '.join(session.model.peft_config)}).")
    before = session.active_adapter
    with _peft_load_errors(path, meta, session.base_fingerprint):
        session.model.load_adapter(str(path), adapter_name=name, is_trainable=True)
    try:
        _check_keys_loaded(session.model, path, name, meta, session.base_fingerprint)
    except QloraError:
        session.model.delete_adapter(name)
        session.model.set_adapter(before)
        raise
    fresh = session.adapters.get(before, {}).get("source") == "fresh" and not is_trained(session.model, before)
    active = name if fresh else before
    session.model.set_adapter(active)  # also makes only the active adapter trainable
    guard_cpu_repack(session.model)
    session.adapters[name] = {"source": str(path), "meta": meta}
    return name


def open_adapter(base_model, directory: str | Path, name: str = "default", allow_pickle: bool = False,
                 model_path: str | Path | None = None):
    """``PeftModel.from_pretrained`` with the toolkit's checks: safetensors only, same base model, trainable."""
    from peft import PeftModel

    from ..model.models import model_fingerprint
    from ..model.quantize import guard_cpu_repack

    path = check_adapter_dir(directory, allow_pickle)
    meta = read_toolkit_metadata(path)
    base_fp = model_fingerprint(Path(model_path)) if model_path is not None else {}
    check_base_matches(path, meta, base_fp)
    name = check_adapter_name(name, "load option 'adapter_name'")
    with _peft_load_errors(path, meta, base_fp):
        model = PeftModel.from_pretrained(base_model, str(path), adapter_name=name, is_trainable=True)
    _check_keys_loaded(model, path, name, meta, base_fp)
    for p in model.parameters():  # adapters train in fp32, as attach_lora makes them
        if p.requires_grad:
            p.data = p.data.float()
    guard_cpu_repack(model)
    return model
