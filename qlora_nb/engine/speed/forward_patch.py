"""Swap the forward of chosen modules for the length of a block, and always put it back.

The CPU training speed-ups (:mod:`.cpu_speed`, :mod:`.cpu_norm`) give selected
modules a forward that takes a fused path where it computes the same thing and
calls the module's own forward elsewhere. Each module gets an instance
attribute, so its class and every other model are untouched; a module that
already has one (someone else's patch) is left alone, and the attribute is
removed on exit even when training raises or is interrupted.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def patched_forwards(model, eligible: Callable[[Any], bool], forward: Callable[..., Any],
                     enabled: bool = True) -> Iterator[list[Any]]:
    """Within the block, each module with ``eligible(module)`` runs ``forward(module, its_own_forward, *args)``.

    Yields the switched modules.
    """
    switched = []
    if enabled:
        for module in model.modules():
            if "forward" not in module.__dict__ and eligible(module):
                module.forward = functools.partial(forward, module, module.forward)
                switched.append(module)
    try:
        yield switched
    finally:
        for module in switched:
            module.__dict__.pop("forward", None)
