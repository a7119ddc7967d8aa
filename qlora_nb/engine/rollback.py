"""Failed calls roll back: the session's adapters, trainable parameters and active adapter as before.

peft registers an adapter in steps (config, then layer by layer, then the
weights); an error in the middle (another base's adapter, a torn file, an
interrupt) leaves a half-registered adapter whose LoRA layers change every
forward. :func:`rolled_back_on_error` records what a failed call may touch and
puts it back, and :func:`fingerprint` is the comparison tests use
(issue 15, class 6).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any


def _lora_layers(model) -> list[tuple[str, Any]]:
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "adapter_layer_names")]


def _layer_adapters(module) -> set[str]:
    names: set[str] = set()
    for attr in tuple(getattr(module, "adapter_layer_names", ())) + tuple(getattr(module, "other_param_names", ())):
        container = getattr(module, attr, None)
        if hasattr(container, "keys"):
            names.update(container.keys())
    return names


def fingerprint(session) -> dict[str, Any]:
    """Everything a failed call must leave unchanged, as plain comparable values."""
    model = session.model
    active = getattr(model, "active_adapter", None)
    return {
        "peft_config": sorted(getattr(model, "peft_config", {}) or {}),
        "active": list(active) if isinstance(active, (list, tuple)) else active,
        "trainable": sorted(n for n, p in model.named_parameters() if p.requires_grad),
        "layers": sorted((n, tuple(sorted(_layer_adapters(m)))) for n, m in _lora_layers(model)),
        "session_adapters": sorted(session.adapters),
        "training": bool(getattr(model, "training", False)),
    }


def _drop_adapter(model, name: str) -> None:
    """Remove ``name`` from every LoRA layer and from the config, however far its registration got."""
    for _, module in _lora_layers(model):
        if name in _layer_adapters(module):
            for attr in tuple(module.adapter_layer_names) + tuple(getattr(module, "other_param_names", ())):
                container = getattr(module, attr, None)
                if hasattr(container, "keys") and name in container:
                    del container[name]
            frozen = getattr(module, "frozen_peft_weight_names", None)
            if isinstance(frozen, dict) and name in frozen:
                del frozen[name]
    config = getattr(model, "peft_config", None)
    if isinstance(config, dict):
        config.pop(name, None)


def _restore_active(model, active: Any) -> None:
    """peft's own ``set_adapter`` (it also flips ``requires_grad``, restored exactly afterwards)."""
    if active is None or not hasattr(model, "set_adapter"):
        return
    with contextlib.suppress(Exception):  # rolling back must not replace the original error
        model.set_adapter(active)


@contextlib.contextmanager
def rolled_back_on_error(session) -> Iterator[None]:
    """Run the block; if it raises (an interrupt included), undo what it did to the session's adapters."""
    model = session.model
    if not hasattr(model, "named_parameters"):  # an unloaded session: nothing to protect
        yield
        return
    before = fingerprint(session)
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    adapters = copy.copy(session.adapters)
    try:
        yield
    except BaseException:
        _undo(session, before, grads, adapters)
        raise


def _undo(session, before: dict[str, Any], grads: dict[str, bool], adapters: dict[str, Any]) -> None:
    model = session.model
    known = set(before["peft_config"]) | {a for _, names in before["layers"] for a in names}
    now = set(getattr(model, "peft_config", {}) or {}) | {a for _, m in _lora_layers(model) for a in _layer_adapters(m)}
    for name in now - known:
        _drop_adapter(model, name)
    _restore_active(model, before["active"])
    for n, p in model.named_parameters():
        if n in grads and p.requires_grad != grads[n]:
            p.requires_grad_(grads[n])
    model.train(before["training"])
    session.adapters.clear()
    session.adapters.update(adapters)
