"""Unloading sessions and explaining out-of-memory errors.

:func:`unload_session` frees what the engine owns (model, optimizer, trainer)
and returns the bytes it released. What a notebook holds besides (``Out[n]``,
``_``, the last traceback, displayed widgets) is the shell's and the views'
business: ``%qlora_unload`` (:mod:`qlora_nb.magics.unload`) clears those first,
using :func:`owned_objects` to know what to look for.

Out-of-memory errors come in three shapes (``MemoryError`` on CPU,
``torch.OutOfMemoryError`` on CUDA, and older ``RuntimeError("CUDA out of
memory")``); :func:`explain_oom` turns each into a :class:`QloraOOMError` that
says what to change, using the planner when it can say which change is cheapest.
"""

from __future__ import annotations

import gc
import sys
from typing import Any

from ..errors import QloraError, QloraOOMError

_OOM_TEXT = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory",
             "failed to allocate")

PLANNER_FIX = "cheapest_fix"  # qlora_nb.engine.forecast.planning.cheapest_fix(session, **train_options) -> str | None
GENERIC_OOM_ADVICE = ("Cheapest changes, in order: gradient_checkpointing: true, a smaller batch_size "
                      "(with gradient_accumulation_steps to keep the effective batch), a smaller cutoff_len, "
                      "optimizer: paged_adamw_8bit; or load with bits=4. Run %qlora_plan to see what fits.")
_ALREADY_4BIT = GENERIC_OOM_ADVICE.replace("; or load with bits=4.", ".")


# ----------------------------------------------------------------- unloading
def _session_bytes(session) -> int:
    """Bytes of every named tensor component (weights, adapters, grads, optimizer) of the session."""
    if getattr(session, "model", None) is None or is_unloaded(session):
        return 0
    try:
        led = session.ledger(measure=False)
    except Exception:  # a half-built session: nothing measurable to report
        return 0
    return sum(v for k, v in led.as_dict().items() if k != "activations_and_other")


def release_allocator() -> None:
    """Collect cycles, return freed heap pages to the OS (glibc) and empty the CUDA cache."""
    gc.collect()
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


class UnloadedError(QloraError, AttributeError):
    """Using an unloaded session's model (an AttributeError too, so ``hasattr``/``getattr(..., default)`` work)."""


class UnloadedModel:
    """Stands in for an unloaded session's model: any use says so instead of failing deep in a library."""

    def __getattr__(self, name: str):
        raise UnloadedError("this session was unloaded (%qlora_unload / Session.unload); its model is gone.",
                         where="session", hint="Load the model again with %qlora_load or qlora_nb.load().")

    def __call__(self, *args, **kwargs):
        return self.__getattr__("__call__")

    def __repr__(self) -> str:
        return "<unloaded model>"


def is_unloaded(session) -> bool:
    return isinstance(getattr(session, "model", None), UnloadedModel)


def unload_session(session) -> int:
    """Drop the session's model, optimizer and trainer; return the tensor bytes that were released.

    The Session object stays as a record (config, runs, adapters) but holds no
    tensors; using its model afterwards raises a QloraError that says so.
    """
    if is_unloaded(session):
        return 0
    from .generation.attached import detach

    freed = _session_bytes(session) + detach(session)
    session.model = UnloadedModel()
    for attr in ("optimizer", "trainer", "_trainer", "_train_state", "_last_inputs"):
        if hasattr(session, attr):
            setattr(session, attr, None)
    for run in getattr(session, "runs", None) or []:
        for attr in ("trainer", "model", "optimizer"):
            if getattr(run, attr, None) is not None:
                try:
                    setattr(run, attr, None)
                except AttributeError:  # frozen dataclass / slots: not ours to change
                    pass
    release_allocator()
    return freed


def owned_objects(session) -> list[Any]:
    """What the engine owns for ``session``: the session, its model and inner layers, optimizer and trainer.

    The shell (``%qlora_unload``) drops the notebook's references to these
    before :func:`unload_session` frees them; the engine itself never looks
    at the shell.
    """
    objs: list[Any] = [session]
    model = None if is_unloaded(session) else getattr(session, "model", None)
    while model is not None and id(model) not in {id(o) for o in objs}:
        objs.append(model)
        model = getattr(model, "base_model", None) or getattr(model, "model", None)
        if not hasattr(model, "parameters"):
            break
    for attr in ("optimizer", "trainer", "_trainer"):
        if getattr(session, attr, None) is not None:
            objs.append(getattr(session, attr))
    return objs


# ----------------------------------------------------------------------- OOM
def is_oom(exc: BaseException) -> bool:
    """MemoryError, torch.OutOfMemoryError, or a RuntimeError whose text says it ran out of memory."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return any(t in text for t in _OOM_TEXT)
    return False


def cheapest_change(session=None, options: dict[str, Any] | None = None) -> str:
    """The planner's cheapest change for this session and run, or generic advice when it cannot say."""
    if session is not None and getattr(session, "model", None) is not None and not is_unloaded(session):
        try:
            from .forecast import planning as planner
        except ImportError:
            planner = None
        fix = getattr(planner, PLANNER_FIX, None) if planner is not None else None
        if fix is not None:
            try:
                advice = fix(session, **(options or {}))
            except Exception:
                advice = None
            if advice:
                return f"The planner's cheapest change: {str(advice).rstrip('.')}. Run %qlora_plan for the rest."
    config = getattr(session, "config", None)
    return _ALREADY_4BIT if getattr(config, "bits", None) == 4 else GENERIC_OOM_ADVICE


def explain_oom(exc: BaseException, where: str, *, session=None, options: dict[str, Any] | None = None,
                checkpoint: str | None = None) -> QloraOOMError | None:
    """A QloraOOMError for memory errors (with advice and the checkpoint kept), else None."""
    if isinstance(exc, QloraOOMError):
        return exc
    if not is_oom(exc):
        return None
    first = (str(exc).splitlines() or [""])[0].strip()
    device = "GPU" if "cuda" in first.lower() or type(exc).__name__ == "OutOfMemoryError" else "memory"
    msg = f"ran out of {device}" + (f" ({first[:160]})" if first else "") + "."
    if checkpoint:
        msg += f" The last checkpoint is kept in {checkpoint}."
    release_allocator()
    err = QloraOOMError(msg, where=where, hint=cheapest_change(session, options))
    err.checkpoint = checkpoint
    return err


def as_qlora_error(exc: BaseException, where: str, *, rerun: str = "rerun") -> QloraError:
    """The one paragraph users see for ``exc``: a QloraError as is, an OOM with the planner's advice, else one line.

    Magics and widget views both show errors through this; ``rerun`` says how to get the traceback there
    (a magic is rerun, a widget's action is reproduced by its copied cell).
    """
    if isinstance(exc, QloraError):
        return exc
    oom = explain_oom(exc, where)
    if oom is not None:
        return oom
    first = (str(exc).strip().splitlines() or [""])[0]
    return QloraError(f"{type(exc).__name__}: {first}".rstrip(": ") + ".", where=where,
                      hint=f"This looks like a bug or an unsupported setting; {rerun} with --debug to see the "
                           "traceback.")


def drop_traceback(exc: BaseException) -> BaseException:
    """``exc`` without its traceback, after clearing the frames (and the tensors their locals hold)."""
    import traceback

    tb = exc.__traceback__
    if tb is not None:
        traceback.clear_frames(tb)
    return exc.with_traceback(None)


def oom_during_training(session, trainer, options: dict[str, Any], output_dir, exc: BaseException) -> QloraOOMError:
    """Stop a run that ran out of memory: drop gradients and optimizer state, name the checkpoint kept."""
    model = getattr(session, "model", None)
    if model is not None and hasattr(model, "zero_grad"):
        model.zero_grad(set_to_none=True)
    if trainer is not None:  # optimizer states are the first thing to give back
        trainer.optimizer = None
        trainer.lr_scheduler = None
    session.optimizer = None
    checkpoint = last_complete_checkpoint(output_dir)
    step = getattr(getattr(trainer, "state", None), "global_step", None)
    err = explain_oom(exc, "%%qlora_train", session=session, options=options, checkpoint=checkpoint)
    if err is None:  # not reachable for callers that checked is_oom, kept for safety
        err = QloraOOMError(f"training stopped ({type(exc).__name__}).", where="%%qlora_train")
    if step is not None:
        err.message = f"{err.message} Training stopped after step {step}; the session is usable."
    if checkpoint is None:
        err.message += " No checkpoint had been written yet (set save_steps to keep one during long runs)."
    err.args = (err.render(),)
    err.step = step
    return err


class oom_guard:
    """``with oom_guard("qlora_nb.load"):`` turns an out-of-memory error in the block into a QloraOOMError.

    The original error's frames are cleared first, so the half-built model
    they hold is freed before the user reads the message.
    """

    def __init__(self, where: str, session=None, options: dict[str, Any] | None = None) -> None:
        self.where, self.session, self.options = where, session, options

    def __enter__(self) -> oom_guard:
        return self

    def __exit__(self, etype, value, tb) -> bool:
        if value is None or not isinstance(value, Exception) or isinstance(value, QloraError) or not is_oom(value):
            return False
        err = explain_oom(drop_traceback(value), self.where, session=self.session, options=self.options)
        raise err from None


def last_complete_checkpoint(output_dir) -> str | None:
    """The newest ``checkpoint-N`` that was saved completely, or None.

    ``Trainer`` writes a checkpoint's files in place, weights first and
    ``trainer_state.json`` last, so an interrupt during the save leaves a torn
    folder; ``get_last_checkpoint`` would pick it. A checkpoint counts only
    when its state parses and its weights are there.
    """
    import json
    import re
    from pathlib import Path

    out = Path(output_dir)
    if not out.is_dir():
        return None
    found = []
    for p in out.iterdir():
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    for _, p in sorted(found, reverse=True):
        try:
            json.loads((p / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if any(p.glob("*.safetensors")):
            return str(p)
    return None
