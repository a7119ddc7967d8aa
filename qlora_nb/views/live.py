"""The choice between the live dashboard and the plain-text printer for a training run.

Inside a Jupyter (ZMQ) kernel the dashboard is displayed after its saved
fallback (text/plain and HTML with the curve as SVG), which is what nbclient,
non-widget front-ends and a notebook reopened without its kernel show; the
fallback is updated at ``train_end`` so they keep the finished run.
Anywhere else (``get_ipython()`` is None or a terminal IPython)
:class:`~qlora_nb.views.progress.TextProgress` prints instead. A kernel cannot
tell whether a browser is attached, so this is the best available signal;
``view="text"``/``"widget"`` overrides it.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ..errors import QloraError
from .progress import TextProgress


def widget_frontend() -> bool:
    """True inside a Jupyter (ZMQ) kernel, where the dashboard is displayed; False in scripts and terminals."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def watch(session: Any, config: Any = None, view: str = "auto", display: bool = True):
    """Attach the right live view to ``session.events`` for the coming run; returns it.

    ``view``: ``"auto"`` (see module docstring), ``"widget"``, ``"text"`` or ``"none"`` (a no-op context).
    Both views detach themselves at ``train_end``; use the result as a context
    manager around the training call so an exception also ends the view::

        with watch(session, cfg):
            result = session.train(**options)
    """
    if view not in ("auto", "widget", "text", "none"):
        raise QloraError(f"unknown progress view {view!r}.", where="progress", hint="use auto, widget, text or none")
    if view == "none":
        return contextlib.nullcontext()
    if view == "widget" or (view == "auto" and widget_frontend()):
        from .dashboard import TrainingDashboard

        dash = TrainingDashboard.for_session(session, config)
        if display:
            from IPython.display import display as show

            # two outputs (saved fallback + live view); the fallback is refreshed at train_end, so nbclient
            # and a notebook reopened without its kernel keep the finished run's summary and curve
            show(dash)
        return dash
    return TextProgress.for_session(session, config)
