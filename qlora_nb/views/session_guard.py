"""One check for every widget method that needs the session: its Python twin says what its button says.

After ``%qlora_unload`` a widget's session is either the unloaded Session (its model a stand-in) or ``None``
(:func:`qlora_nb.views.live.detach_widgets` drops the widget's reference so the model can be freed). The front
end's buttons were guarded; a method called from a cell (``playground.generate()``, ``studio.train()``) failed
deep inside with ``AttributeError: 'NoneType' object has no attribute 'adapters'``. Each widget class names its
one message (``UNLOADED``), marks the methods that need the session with :func:`needs_session` and lists the
others in ``SESSION_FREE``; tests/test_widget_twins_after_unload.py checks every public method is one or the
other, and calls each guarded one on an unloaded session.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import QloraError

F = TypeVar("F", bound=Callable[..., Any])


class SessionGone(QloraError):
    """A widget method that needs the model, called after the session was unloaded (or never given)."""


def unloaded_text(widget: str, purpose: str, reopen: str) -> str:
    """The one paragraph a widget shows, from a button or from Python, once its session is gone."""
    return (f"{widget}: this session was unloaded (%qlora_unload), so there is no model {purpose}. Load one with "
            f"%qlora_load (or qlora_nb.load()) and open a new {widget} with {reopen}.")


def session_gone(session: Any) -> bool:
    from ..engine.lifecycle import is_unloaded

    return session is None or is_unloaded(session)


def require_session(widget: Any) -> None:
    """Raise the widget's ``UNLOADED`` paragraph when its session is gone; its status shows it too."""
    if not session_gone(getattr(widget, "session", None)):
        return
    message = type(widget).UNLOADED
    if widget.has_trait("error"):
        widget.error = message
        if widget.has_trait("status"):
            widget.status = "error"
    elif widget.has_trait("message"):
        widget.message = message
    raise SessionGone(message)


def needs_session(method: F) -> F:
    """Mark ``method`` as needing a live session: checked before it runs (see :func:`require_session`)."""

    @functools.wraps(method)
    def checked(self, *args: Any, **kwargs: Any) -> Any:
        require_session(self)
        return method(self, *args, **kwargs)

    checked.needs_session = True  # type: ignore[attr-defined]
    return checked  # type: ignore[return-value]
