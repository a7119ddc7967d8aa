"""What every operation on a session's LoRA adapters shares.

- :func:`with_adapter` / :func:`evaluating` + :func:`use_adapter`: run something
  with one adapter (or the base, adapters disabled) in eval mode and put back
  everything peft and ``eval()`` change: each module's training flag, the active
  adapter and every ``requires_grad`` flag (peft flips them when adapters are
  enabled, disabled or switched, and the ledger must never see adapter bytes
  move). The CPU repack guard runs on both sides, so an eval-mode forward cannot
  cut the gradients of later training. Used by probes, compare, merge
  verification and the quantization report.
- :func:`is_trained`: LoRA starts with B = 0, so an adapter is trained when any B is non-zero.
- :func:`no_adapter`: the one error for a name that is not an adapter of the session.
- :func:`flatten_adapter_folder`: peft saves a non-default adapter in a sub-folder; keep one flat layout.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from ...errors import QloraError, did_you_mean

BASE = "base"  # the column / adapter name meaning "adapters disabled"


def no_adapter(name: str, known: Iterable[str], where: str = "adapter") -> QloraError:
    """The error for an adapter name the session does not have, with the closest names."""
    known = list(known)
    hint = did_you_mean(name, known) if known else "This session has no adapters."
    return QloraError(f"no adapter named {name!r} in this session.", where=where, hint=hint)


def is_trained(model, name: str) -> bool:
    """True when any LoRA B matrix of adapter ``name`` is non-zero (a fresh adapter equals the base exactly)."""
    for pname, p in model.named_parameters():
        parts = pname.split(".")
        if name in parts and any(part in ("lora_B", "lora_embedding_B") for part in parts):
            if bool(p.detach().ne(0).any()):
                return True
    return False


def active_adapter(model) -> str | None:
    name = getattr(model, "active_adapter", None)
    return name if isinstance(name, str) else (name[0] if name else None)


def flatten_adapter_folder(folder: Path, name: str) -> None:
    """Move the files peft wrote into ``folder/name`` (every adapter but "default") up into ``folder``."""
    nested = folder / name
    if name != "default" and nested.is_dir():
        for f in nested.iterdir():
            f.replace(folder / f.name)
        nested.rmdir()


class ModelState:
    """Snapshot of what peft and eval mode change: active adapter, training flags, ``requires_grad`` flags."""

    def __init__(self, model) -> None:
        self.model = model
        self.active = getattr(model, "active_adapter", None)
        self.training = [(m, m.training) for m in model.modules()]
        self.grad = [(p, p.requires_grad) for p in model.parameters()]

    def reapply_grad(self) -> None:
        for p, flag in self.grad:
            if p.requires_grad != flag:
                p.requires_grad_(flag)

    def restore(self) -> None:
        if self.active is not None and hasattr(self.model, "set_adapter"):
            self.model.set_adapter(self.active)
        for m, flag in self.training:
            m.training = flag
        self.reapply_grad()


@contextlib.contextmanager
def evaluating(model) -> Iterator[ModelState]:
    """Eval mode with every flag restored afterwards, and the CPU repack guard on both sides."""
    from .quantize import guard_cpu_repack

    state = ModelState(model)
    guard_cpu_repack(model)
    model.eval()
    try:
        yield state
    finally:
        state.restore()
        guard_cpu_repack(model)


@contextlib.contextmanager
def use_adapter(model, name: str, state: ModelState) -> Iterator[None]:
    """Inside :func:`evaluating`: the base (``name == BASE``, adapters disabled) or adapter ``name`` active."""
    if name == BASE and not hasattr(model, "disable_adapter"):  # a plain (merged or unwrapped) model
        yield
    elif name == BASE:
        with model.disable_adapter():
            state.reapply_grad()
            yield
    else:
        model.set_adapter(name)
        state.reapply_grad()
        yield


@contextlib.contextmanager
def with_adapter(model, name: str | None = None) -> Iterator[None]:
    """Run the body with adapter ``name`` (None: the active one; ``BASE``: none) in eval mode, then restore all."""
    with evaluating(model) as state, use_adapter(model, name or active_adapter(model) or BASE, state):
        yield
