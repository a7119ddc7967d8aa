"""The live training dashboard: a subscriber of ``session.events`` that draws while the cell runs.

Layout: one anywidget card: the title, status and Stop, then the loss chart
(train/eval loss, learning rate on a right axis from 0, x axis to ``max_steps``)
at the card's width, the progress line, the numbers, probe generations and the
memory ledger (its LoRA table folded).

Persistence: the curve lives in the synced ``curve`` trait (whole arrays), not
in transient messages, so a page reload re-renders it from the kernel's state;
a plotly ``FigureWidget`` was dropped because its ``batch_update()`` arrays are
sent as transient messages and a reloaded page showed 0 points. The saved
fallback (:meth:`fallback_body`) holds the same curve as an inline SVG, for a
notebook reopened without its kernel.

Cost control: events only append to Python lists. The widget is redrawn in
:meth:`TrainingDashboard.flush`, at most every ``min_interval`` seconds and at
least ``1/max_overhead`` times the last redraw's cost apart, so redraws take at
most ~2% of wall time however long the curve gets; ``eval``, ``probe`` and
``train_end`` redraw at once (one comm message per redraw).

Stop: the button's click is routed to a kernel subshell (see
:mod:`qlora_nb.views.kernel_comm`) so it is handled while the main thread
trains; the handler only calls ``session.request_stop()``, and the engine stops
at the next step boundary. Without subshells (:attr:`stop_live` False) the
panel says to use the kernel's Interrupt while the run is busy.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from typing import Any

import traitlets

from .base import QloraWidget, asset, esm, text_as_html
from .chart import loss_svg
from .dashboard_text import metric_text, rank_rows, rank_text
from .progress import fmt_duration, step_fields

MAX_PROBE_ROWS = 24
# Shown while a run is busy on kernels without subshells (ipykernel 6: Colab), where Stop waits for the cell.
STOP_NEEDS_INTERRUPT = ("Stop is seen only after the cell ends on this kernel (live Stop needs ipykernel ≥ 7.4): "
                        "use Interrupt (■ in the toolbar / Kernel → Interrupt) to stop now; it saves a checkpoint.")


def _fmt_eta(seconds: float | None) -> str:
    return fmt_duration(seconds, missing="–")


class TrainingDashboard(QloraWidget):
    """Live view of one training run; build it with :meth:`for_session`."""

    _esm = esm("dashboard.js")
    SESSION_FREE = ("for_session", "continue_from", "detach", "close", "on_event", "flush", "request_stop",
                    "overhead")  # a record of a run: readable after the session is gone; Stop then does nothing
    _css = asset("qlora.css")
    SETTLED = ()  # it rewrites its saved fallback itself, once the final curve is in (train_end)

    title = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("waiting").tag(sync=True)  # waiting, running, stopping, stopped, done, error
    progress = traitlets.Dict().tag(sync=True)  # step, max_steps, epoch, eta_s, loss, learning_rate, tokens_per_s
    n_loss_points = traitlets.Int(0).tag(sync=True)
    n_eval_points = traitlets.Int(0).tag(sync=True)
    curve = traitlets.Dict().tag(sync=True)  # steps, loss, lr, eval_steps, eval_loss: whole arrays (restorable)
    phase = traitlets.Unicode("").tag(sync=True)  # what happens before the first point: tokenizing, first step
    outputs = traitlets.Dict().tag(sync=True)  # where the adapter and the checkpoint were written (at the end)
    ledger = traitlets.Dict().tag(sync=True)
    probes = traitlets.List().tag(sync=True)
    stop_live = traitlets.Bool(False).tag(sync=True)  # True when Stop is handled while the cell runs
    message = traitlets.Unicode("").tag(sync=True)
    ranks = traitlets.List().tag(sync=True)  # %qlora_launch: [{rank, rss, gpu_peak?}] per rank, latest report

    def __init__(self, *, session: Any = None, min_interval: float = 0.5,
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
        self.metric_steps: list[int] = []  # the task metric (eval_metric): the base's at step 0, then each eval
        self.metric_scores: list[float] = []
        self._progress: dict[str, Any] = {}
        self._ledger: dict[str, Any] | None = None
        self._probes: list[dict[str, Any]] = []
        self._status = "waiting"
        self._started: float | None = None
        self._ledger_dirty = self._probes_dirty = False
        self._ranks: dict[int, dict[str, float]] = {}
        self._ranks_dirty = False
        self._drawn = (0, 0, 0)  # (train, eval, metric points) already in ``curve``
        self._phase = "preparing the data (tokenizing)"
        self._outputs: dict[str, str] = {}
        self._tok_sum, self._tok_n = 0.0, 0
        self._next_flush = 0.0
        self._stop_clicked = False
        self._unsubscribe: Callable[[], None] | None = None
        self._unroute: Callable[[], None] | None = None
        self.flushes = 0  # redraws done (the throttle's effect, for tests and benchmarks)
        self.cost = {"events": 0, "event_s": 0.0, "flush_s": 0.0}
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
            w.message = STOP_NEEDS_INTERRUPT
        w.flush()
        return w

    def continue_from(self, history: list[dict[str, Any]]) -> None:
        """Start the curve with an earlier run's logged history (a resumed run continues its curve).

        The arrays go into the synced ``curve`` trait at once, so the view shows them from its first render.
        """
        for h in history:
            if "loss" in h:
                self.steps.append(int(h["step"]))
                self.losses.append(float(h["loss"]))
                self.lrs.append(float(h.get("learning_rate") or 0.0))
            if "eval_loss" in h:
                self.eval_steps.append(int(h["step"]))
                self.eval_losses.append(float(h["eval_loss"]))
        self.flush()

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
            self.clear_display()
            self.close()
            return
        if self._unsubscribe is not None:
            if exc_type is None or issubclass(exc_type, KeyboardInterrupt):
                self.on_event({"kind": "train_end", "interrupted": exc_type is not None})
            else:
                self.on_event({"kind": "train_end", "error": f"{exc_type.__name__}: {exc}"})

    def close(self) -> None:
        self.detach()
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
            self._on_metric(event)
            urgent = True
        elif kind == "phase":  # e.g. "probes at step 12": a long pause between steps says what it is
            self._phase, urgent = str(event.get("text") or ""), True
        elif kind == "probe":
            self._phase = ""
            self._probes.append({k: event.get(k) for k in ("step", "prompt", "input", "base", "adapted", "adapter",
                                                            "truncated", "max_new_tokens")})
            del self._probes[:-MAX_PROBE_ROWS]
            self._probes_dirty = urgent = True
        elif kind == "rank_memory":
            self._ranks[int(event.get("rank", 0))] = {k: float(event[k]) for k in ("rss", "gpu_peak")
                                                       if event.get(k) is not None}
            self._ranks_dirty = True
        elif kind == "ledger" and event.get("ledger"):
            self._ledger, self._ledger_dirty = event["ledger"], True
        elif kind == "train_begin":
            self._status = "running"
            start = int(event.get("start_step") or 0)  # a resumed run: its progress starts at the checkpoint
            self._phase = f"resuming at step {start} (model warm-up)" if start else "first step (model warm-up)"
            if start:
                self._progress.update(step=start, resumed_from=start)
            for key in ("max_steps", "epochs", "predicted_step_s"):
                if event.get(key) is not None:
                    self._progress[key] = event[key]
            if event.get("predicted_step_s") and event.get("max_steps"):  # an ETA before step 1: the forecast's
                left = max(0, int(event["max_steps"]) - start)
                self._progress["eta_s"] = float(event["predicted_step_s"]) * left
            warmup = (event.get("config") or {}).get("warmup_steps")
            if isinstance(warmup, int) and warmup > 0:
                self._progress["warmup_steps"] = warmup
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
            self.refresh_fallback()  # the saved notebook keeps the final curve
        elif kind == "eval":
            self.refresh_fallback()  # a notebook reopened mid-run (kernel busy, no widget) shows a recent curve

    def _on_step(self, e: dict[str, Any]) -> None:
        if e.get("loss") is not None:
            self.steps.append(int(e["step"]))
            self.losses.append(float(e["loss"]))
            self.lrs.append(float(e.get("learning_rate") or 0.0))
        if self._status == "waiting":
            self._status = "running"
        self._phase = ""
        for key in ("step", "max_steps", "epoch", "eta_s", "loss", "learning_rate", "tokens_per_s", "mfu",
                    "step_s", "predicted_step_s"):
            if e.get(key) is not None:
                self._progress[key] = e[key]
        if e.get("tokens_per_s"):
            self._tok_sum, self._tok_n = self._tok_sum + float(e["tokens_per_s"]), self._tok_n + 1
            self._progress["mean_tokens_per_s"] = self._tok_sum / self._tok_n
        warmup = self._progress.get("warmup_steps")
        if warmup and e.get("step") is not None:
            self._progress["warmup"] = int(e["step"]) <= int(warmup)

    def _on_metric(self, e: dict[str, Any]) -> None:
        if e.get("eval_metric") is None:
            return
        self.metric_steps.append(int(e["step"]))
        self.metric_scores.append(float(e["eval_metric"]))
        hits, rows = e.get("eval_metric_hits"), e.get("eval_metric_rows")
        key = "base_metric" if e.get("base") else "metric"
        self._progress[key] = f"{hits:g}/{rows}" if hits is not None else f"{e['eval_metric']:.2f}"
        if e.get("eval_metric_name"):
            self._progress["metric_name"] = str(e["eval_metric_name"]).replace("_", " ")
        self._progress["metric_s"] = self._progress.get("metric_s", 0.0) + float(e.get("eval_metric_s") or 0.0)

    def _on_end(self, e: dict[str, Any]) -> None:
        if e.get("error"):
            self._status, self.message = "error", str(e["error"])
        elif e.get("stopped") or e.get("interrupted") or self._stop_clicked:
            self._status = "stopped"
        else:
            self._status = "done"
        if e.get("stopped_early"):
            self.message = "stopped early: eval_loss stopped improving"
        self._phase = ""
        self._outputs = {k: str(e[k]) for k in ("adapter_dir", "checkpoint") if e.get(k)}
        step = e.get("step", e.get("steps"))
        if step is not None:
            self._progress["step"] = step
        self._progress["eta_s"] = 0 if self._status == "done" else None
        if self._started is not None:
            self._progress["elapsed_s"] = time.perf_counter() - self._started

    def flush(self) -> None:
        """Redraw the card (numbers and curve) from the collected data (main thread only)."""
        t0 = time.perf_counter()
        with self.hold_sync():
            self.status = self._status
            self.progress = dict(self._progress)
            self.n_loss_points = len(self.steps)
            self.n_eval_points = len(self.eval_steps)
            self.phase = self._phase
            self.outputs = dict(self._outputs)
            counts = (len(self.steps), len(self.eval_steps), len(self.metric_steps))
            if counts != self._drawn:
                self._drawn = counts
                self.curve = self._curve()
            if self._ledger_dirty:
                self.ledger, self._ledger_dirty = self._ledger, False
            if self._probes_dirty:
                self.probes, self._probes_dirty = list(self._probes), False
            if self._ranks_dirty:
                self.ranks, self._ranks_dirty = rank_rows(self._ranks), False
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
    def view(self) -> TrainingDashboard:
        """The widget to embed in a layout: the card itself (the loss chart is inside it now)."""
        return self

    def _curve(self) -> dict[str, list]:
        return {"steps": list(self.steps), "loss": list(self.losses), "lr": list(self.lrs),
                "eval_steps": list(self.eval_steps), "eval_loss": list(self.eval_losses),
                "metric_steps": list(self.metric_steps), "metric": list(self.metric_scores)}

    def fallback_title(self) -> str:
        return f"{self.title or 'training'} (saved view; re-run the cell for the live dashboard)"

    def fallback_body(self) -> str:
        # to max_steps, as live; a run that ended early fits its own steps
        ended_early = self._status in ("stopped", "error")
        svg = loss_svg(self._curve(), None if ended_early else self._progress.get("max_steps"))
        where = "".join(f"<div>{html.escape(k.replace('_', ' '))}: <code>{html.escape(v)}</code></div>"
                        for k, v in self._outputs.items())
        return text_as_html(self.text()) + svg + where

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
        if p.get("mean_tokens_per_s"):
            parts.append(f"mean {p['mean_tokens_per_s']:.0f} tok/s")
        if p.get("predicted_step_s") and p.get("step_s"):
            parts.append(f"{p['step_s']:.2f} s/step (predicted {p['predicted_step_s']:.2f})")
        if p.get("metric") or p.get("base_metric"):
            parts.append(metric_text(p))
        if self._status in ("running", "stopping"):
            parts.append(f"eta {_fmt_eta(p.get('eta_s'))}")
        elif p.get("elapsed_s"):  # a resumed run's time is this part's: say which steps it covers
            part = f" (steps {p['resumed_from'] + 1}–{p.get('step')})" if p.get("resumed_from") else ""
            parts.append(f"took {_fmt_eta(p['elapsed_s'])}{part}")
        if self._ranks:
            parts.append(rank_text(self._ranks))
        if self._outputs.get("adapter_dir"):
            parts.append(f"adapter in {self._outputs['adapter_dir']}")
        return " · ".join(parts)



def _get(config: Any, key: str) -> Any:
    if config is None:
        return None
    if isinstance(config, dict):
        return config.get(key)
    return getattr(config, key, None)


def _in_kernel() -> bool:
    from .kernel_comm import current_kernel

    return current_kernel() is not None
