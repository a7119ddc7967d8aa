"""The live training dashboard: a subscriber of ``session.events`` that draws while the cell runs.

Layout: one anywidget panel (status, Stop, progress/ETA, loss, lr, tokens/s,
probe generations, the memory ledger) above a plotly ``FigureWidget`` with the
train/eval loss and the learning rate. Both are shown in one ``VBox``.

Cost control: events only append to Python lists. The widgets are redrawn in
:meth:`TrainingDashboard.flush`, at most every ``min_interval`` seconds and at
least ``1/max_overhead`` times the last redraw's cost apart, so redraws take at
most ~2% of wall time however long the curve gets; ``eval``, ``probe`` and
``train_end`` redraw at once. Curves are sent as whole arrays inside
``batch_update()`` (one comm message per redraw).

Stop: the button's click is routed to a kernel subshell (see
:mod:`qlora_nb.views.kernel_comm`) so it is handled while the main thread
trains; the handler only calls ``session.request_stop()``, and the engine stops
at the next step boundary.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import traitlets

from .base import QloraWidget, asset, esm
from .progress import fmt_duration, step_fields

MAX_PROBE_ROWS = 24


def _fmt_eta(seconds: float | None) -> str:
    return fmt_duration(seconds, missing="–")


class TrainingDashboard(QloraWidget):
    """Live view of one training run; build it with :meth:`for_session`."""

    _esm = esm("dashboard.js")
    _css = asset("qlora.css")

    title = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("waiting").tag(sync=True)  # waiting, running, stopping, stopped, done, error
    progress = traitlets.Dict().tag(sync=True)  # step, max_steps, epoch, eta_s, loss, learning_rate, tokens_per_s
    n_loss_points = traitlets.Int(0).tag(sync=True)
    n_eval_points = traitlets.Int(0).tag(sync=True)
    ledger = traitlets.Dict().tag(sync=True)
    probes = traitlets.List().tag(sync=True)
    stop_live = traitlets.Bool(False).tag(sync=True)  # True when Stop is handled while the cell runs
    message = traitlets.Unicode("").tag(sync=True)

    def __init__(self, *, session: Any = None, figure: bool = True, min_interval: float = 0.5,
                 max_overhead: float = 0.02, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session = session
        self.min_interval = min_interval
        self.max_overhead = max_overhead
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self.eval_steps: list[int] = []
        self.eval_losses: list[float] = []
        self._progress: dict[str, Any] = {}
        self._ledger: dict[str, Any] | None = None
        self._probes: list[dict[str, Any]] = []
        self._status = "waiting"
        self._started: float | None = None
        self._ledger_dirty = self._probes_dirty = False
        self._drawn = (0, 0)  # (train points, eval points) already in the figure
        self._next_flush = 0.0
        self._stop_clicked = False
        self._unsubscribe: Callable[[], None] | None = None
        self._unroute: Callable[[], None] | None = None
        self.flushes = 0  # redraws done (the throttle's effect, for tests and benchmarks)
        self.cost = {"events": 0, "event_s": 0.0, "flush_s": 0.0}
        self.figure = _loss_figure() if figure else None
        self._container = None
        self.display_handle = None  # set by live.watch(); refreshed at train_end
        self.on_msg(self._on_front_msg)

    # ---------------------------------------------------------------- set-up
    @classmethod
    def for_session(cls, session: Any, config: Any = None, **kwargs: Any) -> TrainingDashboard:
        """A dashboard subscribed to ``session.events``; it detaches itself at ``train_end``.

        Use it as a context manager around the training call so that an exception
        (no ``train_end``) still ends the live view, showing the error.
        """
        model = getattr(getattr(session, "config", None), "model", None)
        title = f"training {model}" if model else "training"
        w = cls(session=session, title=kwargs.pop("title", title), **kwargs)
        max_steps = _get(config, "max_steps")
        if isinstance(max_steps, int) and max_steps > 0:
            w._progress["max_steps"] = max_steps
        w._unsubscribe = session.events.subscribe(w.on_event)
        from .kernel_comm import route_to_subshell

        w._unroute = route_to_subshell(w)
        w.stop_live = w._unroute is not None
        if not w.stop_live and _in_kernel():
            w.message = INTERRUPT_HINT
        w.flush()
        return w

    def detach(self) -> None:
        """Stop listening to the session (the widget stays displayed with its final state)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._unroute is not None:
            self._unroute()
            self._unroute = None

    def __enter__(self) -> TrainingDashboard:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Training raised before ``train_end``: show the error instead of a run that never ends."""
        if self._unsubscribe is not None and exc_type is not None and self._status == "waiting":
            # failed before training began (bad data, bad option): the error says it all, drop the empty view
            self.detach()
            if self.display_handle is not None:
                self.display_handle.update({"text/plain": ""}, raw=True)
            self.close()
            return
        if self._unsubscribe is not None:
            if exc_type is None or issubclass(exc_type, KeyboardInterrupt):
                self.on_event({"kind": "train_end", "interrupted": exc_type is not None})
            else:
                self.on_event({"kind": "train_end", "error": f"{exc_type.__name__}: {exc}"})

    def close(self) -> None:
        self.detach()
        if self.figure is not None:
            self.figure.close()
        if self._container is not None:
            self._container.close()
        super().close()

    # ---------------------------------------------------------------- events
    def on_event(self, event: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        kind = event.get("kind")
        urgent = False
        if kind == "step":
            self._on_step(event)
        elif kind == "eval":
            if event.get("eval_loss") is not None:
                self.eval_steps.append(int(event["step"]))
                self.eval_losses.append(float(event["eval_loss"]))
                self._progress["eval_loss"] = float(event["eval_loss"])
            urgent = True
        elif kind == "probe":
            self._probes.append({k: event.get(k) for k in ("step", "prompt", "base", "adapted")})
            del self._probes[:-MAX_PROBE_ROWS]
            self._probes_dirty = urgent = True
        elif kind == "ledger" and event.get("ledger"):
            self._ledger, self._ledger_dirty = event["ledger"], True
        elif kind == "train_begin":
            self._status = "running"
            for key in ("max_steps", "epochs"):
                if event.get(key) is not None:
                    self._progress[key] = event[key]
            self._started = time.perf_counter()
            urgent = True
        elif kind == "train_end":
            self._on_end(event)
            urgent = True
        elif kind != "poll":
            return
        if self._stop_clicked and self._status == "running":
            self._status, urgent = "stopping", True
        if urgent or time.perf_counter() >= self._next_flush:
            self.flush()
        self.cost["events"] += 1
        self.cost["event_s"] += time.perf_counter() - t0
        if kind == "train_end":
            self.detach()
            if self.display_handle is not None:
                self.display_handle.update(self)

    def _on_step(self, e: dict[str, Any]) -> None:
        if e.get("loss") is not None:
            self.steps.append(int(e["step"]))
            self.losses.append(float(e["loss"]))
            self.lrs.append(float(e.get("learning_rate") or 0.0))
        if self._status == "waiting":
            self._status = "running"
        for key in ("step", "max_steps", "epoch", "eta_s", "loss", "learning_rate", "tokens_per_s"):
            if e.get(key) is not None:
                self._progress[key] = e[key]

    def _on_end(self, e: dict[str, Any]) -> None:
        if e.get("error"):
            self._status, self.message = "error", str(e["error"])
        elif e.get("stopped") or e.get("interrupted") or self._stop_clicked:
            self._status = "stopped"
        else:
            self._status = "done"
        if e.get("stopped_early"):
            self.message = "stopped early: eval_loss stopped improving"
        step = e.get("step", e.get("steps"))
        if step is not None:
            self._progress["step"] = step
        self._progress["eta_s"] = 0 if self._status == "done" else None
        if self._started is not None:
            self._progress["elapsed_s"] = time.perf_counter() - self._started

    def flush(self) -> None:
        """Redraw the panel and the figure from the collected data (main thread only)."""
        t0 = time.perf_counter()
        with self.hold_sync():
            self.status = self._status
            self.progress = dict(self._progress)
            self.n_loss_points = len(self.steps)
            self.n_eval_points = len(self.eval_steps)
            if self._ledger_dirty:
                self.ledger, self._ledger_dirty = self._ledger, False
            if self._probes_dirty:
                self.probes, self._probes_dirty = list(self._probes), False
        counts = (len(self.steps), len(self.eval_steps))
        if self.figure is not None and counts != self._drawn:
            self._drawn = counts
            tr = self.figure.data
            with self.figure.batch_update():
                tr[0].x, tr[0].y = list(self.steps), list(self.losses)
                tr[1].x, tr[1].y = list(self.steps), list(self.lrs)
                tr[2].x, tr[2].y = list(self.eval_steps), list(self.eval_losses)
        cost = time.perf_counter() - t0
        self.flushes += 1
        self.cost["flush_s"] += cost
        self._next_flush = time.perf_counter() + max(self.min_interval, cost / self.max_overhead)

    # ------------------------------------------------------------------ stop
    def _on_front_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("event") == "stop":
            self.request_stop()

    def request_stop(self) -> None:
        """Ask the engine to stop at the next step boundary (thread-safe: only sets flags)."""
        self._stop_clicked = True
        session = self.session
        if session is None:
            return
        if callable(getattr(session, "request_stop", None)):
            session.request_stop()
        else:
            session.stop_requested = True

    # --------------------------------------------------------------- display
    @property
    def view(self):
        """The panel and the loss figure in one ``VBox`` (what is displayed)."""
        if self._container is None:
            import ipywidgets

            children = [self] + ([self.figure] if self.figure is not None else [])
            self._container = ipywidgets.VBox(children)
        return self._container

    def _repr_mimebundle_(self, **kwargs: Any):
        bundle = self.view._repr_mimebundle_(**kwargs)
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, {})
        data = dict(data or {})
        data["text/plain"] = self.text()
        return data, meta

    def overhead(self) -> dict[str, float]:
        """Mean seconds per event handled and per redraw (what the throttle keeps under ~2%)."""
        n = max(self.cost["events"], 1)
        return {"events": self.cost["events"], "flushes": self.flushes,
                "per_event_s": self.cost["event_s"] / n, "per_flush_s": self.cost["flush_s"] / max(self.flushes, 1)}

    def text(self) -> str:
        p = self._progress
        parts = [f"{self.title or 'training'}: {self._status}"]
        if p.get("step") is not None:
            parts.extend(step_fields(p))
        if self._status in ("running", "stopping"):
            parts.append(f"eta {_fmt_eta(p.get('eta_s'))}")
        return " · ".join(parts)


# Shown while a run is busy on kernels without subshells (ipykernel 6: Colab), where Stop waits for the cell.
INTERRUPT_HINT = ("Stop is seen only after the cell ends on this kernel (live Stop needs ipykernel ≥ 7.4): "
                  "use Interrupt (■ in the toolbar / Kernel → Interrupt) to stop now; it saves a checkpoint.")


def _get(config: Any, key: str) -> Any:
    if config is None:
        return None
    if isinstance(config, dict):
        return config.get(key)
    return getattr(config, key, None)


def _in_kernel() -> bool:
    from .kernel_comm import current_kernel

    return current_kernel() is not None


def _loss_figure():
    """Train loss, learning rate (right axis) and eval loss; built once, then only data arrays change."""
    import plotly.graph_objects as go

    fig = go.FigureWidget(
        data=[
            go.Scatter(x=[], y=[], mode="lines", name="train loss", line={"color": "#2563eb"}),
            go.Scatter(x=[], y=[], mode="lines", name="learning rate", yaxis="y2",
                       line={"color": "#94a3b8", "dash": "dot", "width": 1}),
            go.Scatter(x=[], y=[], mode="lines+markers", name="eval loss", line={"color": "#dc2626"}),
        ],
        layout={
            "height": 300, "margin": {"l": 50, "r": 60, "t": 10, "b": 40}, "template": "plotly_white",
            "xaxis": {"title": {"text": "step"}}, "yaxis": {"title": {"text": "loss"}},
            "yaxis2": {"title": {"text": "lr"}, "overlaying": "y", "side": "right", "showgrid": False,
                       "tickformat": ".1e"},
            "legend": {"orientation": "h", "y": 1.08},
        },
    )
    return fig
