"""A tiny publish/subscribe bus: the engine emits plain dicts, anything may listen.

Widgets, the text progress printer and tests are all just subscribers, so the
engine never imports a widget. A subscriber that raises is dropped from that
emit (and reported once) rather than killing a training run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]
Subscriber = Callable[[Event], None]

log = logging.getLogger("qlora_nb")


class EventBus:
    """Synchronous fan-out of events such as ``{"kind": "step", "step": 3, "loss": 1.2}``."""

    def __init__(self) -> None:
        self._subs: list[Subscriber] = []

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Add ``fn``; returns a function that removes it again."""
        self._subs.append(fn)

        def unsubscribe() -> None:
            if fn in self._subs:
                self._subs.remove(fn)

        return unsubscribe

    def emit(self, kind: str, **data: Any) -> Event:
        event: Event = {"kind": kind, **data}
        for fn in list(self._subs):
            try:
                fn(event)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # a broken view must not stop the engine
                log.warning("qlora_nb: event subscriber %r failed on %r: %s", fn, kind, exc)
        return event

    def __len__(self) -> int:
        return len(self._subs)
