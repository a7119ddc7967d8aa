"""Let a widget's clicks reach Python while the kernel's main thread is busy training.

A Jupyter kernel handles comm messages (a button click) on the same thread that
runs the cell, so a Stop button is normally only seen after the cell ends.
ipykernel 7 added *subshells*: extra threads with their own event loop, and a
per-comm routing hook (``Comm._reply_subshell_for``) that the shell-channel
thread consults for every ``comm_msg``. We give the widget's comm a dedicated
subshell, so its messages are handled there at once, at no cost to the
training loop (no polling on the main thread, which ipykernel 7 no longer
supports: ``Kernel.do_one_iteration`` is gone, so jupyter-ui-poll silently
does nothing there).

Handlers that run on the subshell must be thread-safe: the dashboard's only
sets a flag. Where there is no subshell support (ipykernel < 7, in-process or
no kernel) :func:`route_to_subshell` returns ``None`` and the caller says so.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("qlora_nb")

_subshells: dict[int, str] = {}  # id(kernel) -> subshell id, one shared subshell per kernel
_lock = threading.Lock()


def current_kernel() -> Any | None:
    """The running ipykernel ``Kernel`` (None in plain Python, a terminal IPython or a test)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return None
    shell = get_ipython()
    return getattr(shell, "kernel", None) if shell is not None else None


def _create_subshell(kernel: Any, timeout: float = 5.0) -> str | None:
    """Create a subshell from inside the kernel: the manager must be driven from the shell-channel thread."""
    thread = getattr(kernel, "shell_channel_thread", None)
    if thread is None or not thread.is_alive():
        return None
    manager = thread.manager
    done = threading.Event()
    box: dict[str, Any] = {}

    def create() -> None:
        try:
            box["id"] = manager._create_subshell()
        except Exception as exc:  # reported below; never kill the shell-channel thread
            box["error"] = exc
        finally:
            done.set()

    thread.io_loop.add_callback(create)
    if not done.wait(timeout) or "error" in box:
        log.warning("qlora_nb: could not create a kernel subshell for widget events: %s", box.get("error", "timeout"))
        return None
    return box["id"]


def shared_subshell(kernel: Any) -> str | None:
    """The subshell that qlora_nb widgets' comms are routed to (created once per kernel)."""
    with _lock:
        sid = _subshells.get(id(kernel))
        if sid is None:
            sid = _create_subshell(kernel)
            if sid is not None:
                _subshells[id(kernel)] = sid
        return sid


def kernel_has_subshells(kernel: Any | None = None) -> bool:
    """Whether clicks can reach Python while a cell runs: ipykernel >= 7.4 (subshells and the comm routing hook).

    False on ipykernel 6 (Colab's kernel), in-process kernels and outside a kernel: there a Stop button is seen
    only after the cell ends, and the dashboard tells users to interrupt the kernel instead.
    """
    kernel = kernel if kernel is not None else current_kernel()
    if kernel is None or not getattr(kernel, "_supports_kernel_subshells", False):
        return False
    try:
        from ipykernel.comm import Comm
    except ImportError:
        return False
    return callable(getattr(Comm, "_reply_subshell_for", None))


def route_to_subshell(widget: Any, kernel: Any | None = None) -> Callable[[], None] | None:
    """Handle ``widget``'s front-end messages on a subshell thread; returns a function that undoes it.

    Returns None where the kernel cannot do this (then clicks wait for the cell to end).
    """
    kernel = kernel if kernel is not None else current_kernel()
    comm = getattr(widget, "comm", None)
    if kernel is None or comm is None or not getattr(kernel, "_supports_kernel_subshells", False):
        return None
    if not callable(getattr(type(comm), "_reply_subshell_for", None)):  # ipykernel < 7.4 has no routing hook
        return None
    sid = shared_subshell(kernel)
    if sid is None:
        return None
    comm._reply_subshell_for = lambda data, default: sid  # instance attribute shadows the method

    def restore() -> None:
        comm.__dict__.pop("_reply_subshell_for", None)

    return restore
