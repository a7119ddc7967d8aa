"""Plain-text training progress: the printer for terminals, scripts and nbclient/papermill runs.

Where no widget front-end can render, a line like
``step 12/60 loss 1.2340 lr 2.0e-04 310 tok/s eta 0:42`` is printed every few
steps, on every eval and at the end. :func:`qlora_nb.views.live.watch` decides
between this printer and the dashboard.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


def fmt_duration(seconds: float | None, missing: str = "?") -> str:
    """``m:ss`` or ``h:mm:ss``; ``missing`` when the duration is unknown (None, NaN, negative)."""
    if seconds is None or seconds != seconds or seconds < 0:
        return missing
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def step_fields(e: dict[str, Any]) -> list[str]:
    """The step, loss, eval loss, learning rate and tokens/s that ``e`` holds, formatted (shared by both views)."""
    parts = [f"step {e.get('step')}/{e.get('max_steps') or '?'}"]
    for key, fmt in (("loss", "loss {:.4f}"), ("eval_loss", "eval_loss {:.4f}"), ("learning_rate", "lr {:.1e}"),
                     ("tokens_per_s", "{:.0f} tok/s"), ("mfu", "MFU {:.1%}")):
        if e.get(key) is not None:
            parts.append(fmt.format(e[key]))
    return parts


class TextProgress:
    """An event subscriber that prints one progress line per ``every`` steps, per eval and at the end.

    ``every=None`` picks about ten lines per run from ``max_steps``.
    """

    def __init__(self, every: int | None = None, stream: TextIO | None = None) -> None:
        self.every = every
        self.stream = stream
        self._unsubscribe: Callable[[], None] | None = None
        self._last: dict[str, Any] = {}
        self._started: float | None = None

    @classmethod
    def for_session(cls, session: Any, config: Any = None, **kwargs: Any) -> TextProgress:
        p = cls(**kwargs)
        p._unsubscribe = session.events.subscribe(p.on_event)
        return p

    def detach(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    close = detach

    def __enter__(self) -> TextProgress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        began = self._started is not None or bool(self._last)
        if self._unsubscribe is not None and exc_type is not None and began:
            # (failed or interrupted before training began: the error's one line says it all)
            if issubclass(exc_type, KeyboardInterrupt):
                self.on_event({"kind": "train_end", "interrupted": True})
            else:
                self.on_event({"kind": "train_end", "error": f"{exc_type.__name__}: {exc}"})
        self.detach()

    def _print(self, line: str) -> None:
        stream = self.stream or sys.stdout
        print(line, file=stream, flush=True)

    def _interval(self, max_steps: Any) -> int:
        if self.every:
            return max(1, int(self.every))
        return max(1, int(max_steps) // 10) if isinstance(max_steps, int) and max_steps > 0 else 10

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "train_begin":
            self._started = time.perf_counter()
        elif kind == "step":
            self._last = event
            step, max_steps = event.get("step"), event.get("max_steps")
            if isinstance(step, int) and (step % self._interval(max_steps) == 0 or step == max_steps or step == 1):
                self._print(self.step_line(event))
        elif kind == "eval" and event.get("eval_loss") is not None:
            self._print(f"eval step {event.get('step')} eval_loss {event['eval_loss']:.4f}")
        elif kind == "probe":
            cut = (event.get("truncated") or {}).get("adapted")
            mark = f" … (cut at {event.get('max_new_tokens')} tokens)" if cut else ""
            self._print(f"probe @ {event.get('step')}: {_clip(event.get('prompt'))!r} -> {_clip(event.get('adapted'))!r}"
                        + mark)
        elif kind == "train_end":
            self._print(self.end_line(event))
            self.detach()

    @staticmethod
    def step_line(e: dict[str, Any]) -> str:
        return " ".join([*step_fields(e), f"eta {fmt_duration(e.get('eta_s'))}"])

    def end_line(self, e: dict[str, Any]) -> str:
        if e.get("error"):
            state = f"failed: {e['error']}"
        else:
            state = "stopped" if (e.get("stopped") or e.get("interrupted")) else "done"
        step = e.get("step", e.get("steps", self._last.get("step")))
        parts = [f"{state} at step {step}/{self._last.get('max_steps') or '?'}"]
        if self._last.get("loss") is not None:
            parts.append(f"loss {self._last['loss']:.4f}")
        if self._started is not None:
            parts.append(f"in {fmt_duration(time.perf_counter() - self._started)}")
        return " ".join(parts)


def _clip(text: Any, n: int = 60) -> str:
    s = "" if text is None else str(text).replace("\n", " ")
    return s if len(s) <= n else s[: n - 1] + "…"
