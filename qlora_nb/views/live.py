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
import sys
from typing import Any

from ..errors import QloraError
from .progress import TextProgress


def detach_widgets(ids: set[int]) -> int:
    """Drop widget attributes that point at the objects ``ids`` (an unloaded session, its model); how many.

    ipywidgets keeps every widget it ever displayed in a module-level registry
    until the widget is closed, so a dashboard holding ``session`` would keep
    the model alive forever after an unload. ipywidgets is only looked up, not
    imported: when it was never imported there are no widgets to detach.
    """
    registry = getattr(sys.modules.get("ipywidgets.widgets.widget"), "_instances", None)
    if not isinstance(registry, dict):
        return 0
    n = 0
    for widget in list(registry.values()):
        attrs = getattr(widget, "__dict__", None)
        if not isinstance(attrs, dict):
            continue
        for key, value in list(attrs.items()):
            if id(value) in ids:
                attrs[key] = None
                n += 1
    return n


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
    from .base import widget_frontend  # one kernel check for every view (anywidget imported only here)

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
