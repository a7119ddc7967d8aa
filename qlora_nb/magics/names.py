"""Which notebook names a magic may bind its result to, without clobbering the user's objects silently.

Rules (issue 15, class 3): the name must be a Python identifier that is not a
keyword (``class`` could never be typed back); a builtin (``print``, ``list``)
is shadowed only with ``--force``; a live ``Session`` or any object the toolkit
did not make (a DataFrame, a number, a function) is replaced only with
``--force``. Rebinding a name that holds an earlier toolkit *result* (the
``train_result`` of the previous run) is the normal re-run of a cell and is
allowed. ``%qlora_load`` may replace a Session, since re-running the load cell
is how a notebook reloads.
"""

from __future__ import annotations

import builtins
import keyword
from collections.abc import Mapping
from typing import Any

from ..errors import QloraError


def _is_session(value: Any) -> bool:
    return type(value).__name__ == "Session" and type(value).__module__.startswith("qlora_nb.")


def _is_toolkit_object(value: Any) -> bool:
    module = type(value).__module__ or ""
    return module == "qlora_nb" or module.startswith("qlora_nb.")


def check_name(name: str, flag: str) -> None:
    """Refuse text that cannot be a variable name (``1abc``, ``my-run``, ``class``)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise QloraError(f"{name!r} is not a valid Python name.", where=flag,
                         hint="Use letters, digits and underscores, not starting with a digit.")
    if keyword.iskeyword(name):
        raise QloraError(f"{name!r} is a Python keyword, so the result could not be used by name.", where=flag,
                         hint=f"Pick another name, e.g. {name}_result.")


def check_bind(namespace: Mapping[str, Any], name: str, *, flag: str, what: str, force: bool = False,
               replaces_session: bool = False) -> None:
    """Raise unless binding a new ``what`` (e.g. "TrainResult") to ``name`` loses nothing unasked.

    Called *before* the work starts, so a refused name costs nothing.
    ``replaces_session``: the new value is itself a Session (``%qlora_load``).
    """
    check_name(name, flag)
    if force:
        return
    if name not in namespace:
        if hasattr(builtins, name):
            raise QloraError(f"{name!r} is a Python builtin; binding the {what} to it would hide "
                             f"{name}() for the rest of the notebook.", where=flag,
                             hint="Pick another name, or pass --force to shadow the builtin.")
        return
    old = namespace[name]
    if _is_session(old):
        if replaces_session:
            return  # re-running %qlora_load: the new session takes the name
        raise QloraError(f"{name!r} holds a live Session; binding the {what} to it would lose the loaded model.",
                         where=flag, hint=f"Pick another name, or pass --force to replace it (%qlora_unload "
                                          f"--session {name} frees its memory first).")
    if not _is_toolkit_object(old):
        raise QloraError(f"{name!r} already holds your {type(old).__name__}; the {what} would replace it.",
                         where=flag, hint="Pick another name, or pass --force to replace it.")
