"""``%qlora_unload``'s shell work: drop the notebook's hidden references to a session, then free it.

A notebook keeps objects alive in places users do not see: ``Out[n]``, ``_``,
the last traceback's frames (which hold the locals of the engine function that
failed), IPython's traceback formatter and displayed widgets. Deleting the
variable alone frees nothing while any of those still point at the model, so
:func:`unload_from_shell` clears them all; the engine's
:func:`~qlora_nb.engine.lifecycle.unload_session` then frees what it owns.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from typing import Any


def _refers_to(value: Any, ids: set[int]) -> bool:
    """True when ``value`` is a target or holds one directly (a result/widget holding the session)."""
    if id(value) in ids:
        return True
    try:
        refs = gc.get_referents(value)
        d = getattr(value, "__dict__", None)
        if isinstance(d, dict):
            refs += list(d.values())
    except Exception:
        return False
    return any(id(r) in ids for r in refs)


def _clear_traceback(tb) -> None:
    import traceback

    if tb is not None:
        with contextlib.suppress(Exception):
            traceback.clear_frames(tb)


def clear_shell_references(shell, ids: set[int]) -> list[str]:
    """Remove references to ``ids`` from IPython's output history, ``_`` variables and last traceback."""
    cleared: list[str] = []
    # The last traceback's frames hold the locals of the function that failed (often the session/model).
    last_tb = getattr(sys, "last_traceback", None)
    if last_tb is not None:
        _clear_traceback(last_tb)
        cleared.append("last traceback")
    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        if hasattr(sys, name):
            delattr(sys, name)
    for tb_holder in (getattr(shell, "InteractiveTB", None), getattr(shell, "SyntaxTB", None)):
        if tb_holder is not None and getattr(tb_holder, "tb", None) is not None:
            _clear_traceback(tb_holder.tb)
            tb_holder.tb = None
    hm = getattr(shell, "history_manager", None)
    out = getattr(hm, "output_hist", None)
    if isinstance(out, dict):
        for n in [n for n, v in out.items() if _refers_to(v, ids)]:
            del out[n]
            cleared.append(f"Out[{n}]")
    # ``_``, ``__``, ``___`` and ``_N`` live in user_ns and, as values, in user_ns_hidden too.
    spaces = [shell.user_ns] + [d for d in (getattr(shell, "user_ns_hidden", None),) if isinstance(d, dict)]
    for ns in spaces:
        for name in [k for k, v in ns.items() if (k in ("_", "__", "___") or (k.startswith("_") and k[1:].isdigit()))
                     and _refers_to(v, ids)]:
            if name in ("_", "__", "___"):
                ns[name] = None
            else:
                del ns[name]
            if ns is shell.user_ns:
                cleared.append(name)
    dh = getattr(shell, "displayhook", None)
    for name in ("_", "__", "___"):
        if dh is not None and _refers_to(getattr(dh, name, None), ids):
            setattr(dh, name, None)
    last = getattr(shell, "last_execution_result", None)
    if last is not None:
        # A QloraError shown by the custom handler never reaches sys.last_*; the previous cell's result keeps it.
        err, seen = getattr(last, "error_in_exec", None), set()
        while isinstance(err, BaseException) and id(err) not in seen:
            seen.add(id(err))
            _clear_traceback(err.__traceback__)
            err = err.__cause__ or err.__context__
        if _refers_to(getattr(last, "result", None), ids):
            shell.last_execution_result = None
    return cleared


def unload_from_shell(shell, name: str, session) -> str:
    """``%qlora_unload``: unbind ``name``, clear the notebook's hidden references, free the model; a report."""
    from ..engine.lifecycle import owned_objects, release_allocator, unload_session
    from ..memory.ledger import rss_bytes
    from ..units import human_bytes
    from ..views.live import detach_widgets

    rss_before = rss_bytes()
    ids = {id(o) for o in owned_objects(session)}
    cleared = clear_shell_references(shell, ids)  # what *holds* the session: results, widgets, tracebacks
    if detach_widgets(ids):
        cleared.append("widgets")
    # other names the user bound to the same session: del_var clears them too, and the report says so
    others = [k for k, v in shell.user_ns.items() if v is session and k != name and not k.startswith("_")]
    # IPython's del_var drops every name (user_ns, hidden names, Out) that *is* the session. It reads
    # last_execution_result last, which clear_shell_references may have dropped: nothing is left to do then.
    with contextlib.suppress(AttributeError):
        shell.del_var(name)
    freed = unload_session(session)
    del session
    release_allocator()
    rss_after = rss_bytes()
    extra = f"; cleared {', '.join(cleared)}" if cleared else ""
    if others:
        extra += f"; also unbound {', '.join(others)} (the same session)"
    return (f"unloaded {name!r}: {human_bytes(freed)} of model tensors released (ledger); process RSS "
            f"{human_bytes(rss_before)} -> {human_bytes(rss_after)} ({human_bytes(max(0, rss_before - rss_after))} "
            f"returned){extra}.")
