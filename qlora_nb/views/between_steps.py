"""A playground or chat click that arrives while the session trains: answered at the next step boundary.

A Jupyter kernel handles a widget's messages on the thread that runs the cell,
so a Generate clicked during a ``%%qlora_train`` cell used to wait, silently,
for the whole run (75 s in the browser review). Where the kernel has subshells
(:mod:`.kernel_comm`) the widget's comm is routed to one while its session
trains: the click is seen at once, the widget says "waiting for training (step
n/N)", and the request runs at the next step boundary, inside the training cell
on the kernel's main thread (the ``poll`` event the trainer emits after every
step), as the dashboard's probes do. It is not run on the subshell thread
itself, which would race the training step for the same weights; and it runs
with the RNG forked, so the run's dropout draws, and so its result, are the same
as without the click. Without subshells (ipykernel < 7.4, Colab) the click is
seen when the cell ends, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class TrainingWatch:
    """Follows ``session``'s training events for one widget and holds the request that came in during a run."""

    def __init__(self, widget: Any, session: Any, run: Callable[[dict[str, Any]], None],
                 show_waiting: Callable[[str], None]) -> None:
        self.widget, self.run, self.show_waiting = widget, run, show_waiting
        self.training, self.step, self.max_steps = False, 0, None
        self.pending: dict[str, Any] | None = None
        self._running = False
        self._unroute: Callable[[], None] | None = None
        events = getattr(session, "events", None)
        self._unsubscribe = events.subscribe(self._on_event) if events is not None else None

    def waiting_text(self) -> str:
        of = f"/{self.max_steps}" if self.max_steps else ""
        return f"waiting for training (step {self.step}{of}): this runs at the next step boundary"

    def defer(self, content: dict[str, Any]) -> bool:
        """Keep ``content`` for the next step boundary when a run is going on (True: the caller stops there)."""
        if not self.training or self._running:
            return False
        self.pending = content
        self.show_waiting(self.waiting_text())
        return True

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "train_begin":
            from .kernel_comm import route_to_subshell

            self.training, self.step, self.max_steps = True, 0, event.get("max_steps")
            self._unroute = route_to_subshell(self.widget)
        elif kind == "poll":
            self.step = int(event.get("step") or self.step)
            self._run_pending()
        elif kind == "train_end":
            self.training = False
            self._restore_route()
            self._run_pending()

    def _run_pending(self) -> None:
        content, self.pending = self.pending, None
        if content is None:
            return
        import torch

        self._running = True
        cuda = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        try:
            with torch.random.fork_rng(devices=cuda):
                self.run(content)
        finally:
            self._running = False

    def _restore_route(self) -> None:
        if self._unroute is not None:
            self._unroute()
            self._unroute = None

    def close(self) -> None:
        self._restore_route()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None


class FollowsRuns:
    """For a widget (playground, chat) whose clicks are answered between a run's steps: owns its watch."""

    _watch: TrainingWatch | None = None
    SESSION_FREE: tuple[str, ...] = ("follow_runs", "close")

    def follow_runs(self, session: Any) -> None:
        self._watch = TrainingWatch(self, session, lambda content: self._on_front_msg(self, content, None),
                                    self._show_waiting)

    def close(self) -> None:
        """Stop following the session's runs (a closed widget holds no subscription)."""
        if self._watch is not None:  # None also in ``__del__`` of a widget whose ``__init__`` raised
            self._watch.close()
        super().close()

