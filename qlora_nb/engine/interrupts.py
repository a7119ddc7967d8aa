"""Interrupts always leave a resumable state, and say which (issue 15, class 8).

During ``train()`` a temporary SIGINT handler turns the first interrupt into
"stop at the next step boundary and write a checkpoint". A second interrupt
used to abort at once, possibly inside ``optimizer.step()`` or inside the
checkpoint save, leaving no checkpoint although the first message promised
one. Now:

* inside the critical part of a step (from ``on_pre_optimizer_step`` until the
  step's counters are updated) and while the final checkpoint is written, a
  further interrupt is deferred: the step and the save finish;
* anywhere else (forward, backward, evaluation) it aborts the step at once;
  weights, optimizer and scheduler are then exactly as after the last finished
  step, and :func:`checkpoint_after_abort` writes that checkpoint with further
  interrupts ignored for the few seconds it takes;
* the run's note says which checkpoint exists and how to continue.

Loading and data preparation are wrapped by :func:`interrupted_as_error`, so
an interrupt there is one line, not a page of KeyboardInterrupt traceback.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import QloraError


class QloraInterrupted(QloraError, KeyboardInterrupt):
    """An interrupt, explained in one line; still a KeyboardInterrupt for code that catches those."""


class InterruptFlag:
    """A SIGINT handler for the duration of a run (see the module docstring)."""

    def __init__(self) -> None:
        self.hit = False  # first interrupt: stop at the next step boundary
        self.critical = False  # inside optimizer.step()..on_step_end, or writing the final checkpoint
        self.deferred = 0  # interrupts received while critical
        self._old: Any = None

    def _handle(self, signum, frame) -> None:
        if not self.hit:
            self.hit = True
            return
        if self.critical:
            self.deferred += 1
            print("qlora_nb: finishing this step and writing its checkpoint; training stops right after.",
                  file=sys.stderr)
            return
        raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None


@contextlib.contextmanager
def ignoring_interrupts() -> Iterator[None]:
    """Interrupts are ignored (not queued) while a checkpoint is written, in the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def checkpoint_after_abort(trainer, out: Path) -> tuple[Path | None, str]:
    """After an aborted step: write the checkpoint of the last finished step; return it and the note."""
    from .lifecycle import last_complete_checkpoint

    step = int(getattr(trainer.state, "global_step", 0) or 0)
    if step == 0:
        return None, ("Interrupted a second time before the first step finished: no checkpoint was written. Train "
                      "again without resume to start over.")
    existing = last_complete_checkpoint(out)
    if existing and Path(existing).name == f"checkpoint-{step}":
        return Path(existing), (f"Interrupted a second time after step {step}: {existing} holds that step; "
                                "continue with resume: true.")
    try:
        with ignoring_interrupts():
            trainer._save_checkpoint(trainer.model, trial=None)
    except (Exception, KeyboardInterrupt) as exc:  # a full disk, a torn write: say so instead of pretending
        kept = f" The newest complete checkpoint is {existing}; resume: true continues from it." if existing else ""
        return None, (f"Interrupted a second time after step {step}, and writing checkpoint-{step} failed "
                      f"({type(exc).__name__}: {exc}).{kept} The session's adapter is as of step {step}: save it "
                      "with %qlora_save, or train again.")
    written = last_complete_checkpoint(out)
    return (Path(written) if written else None), (
        f"Interrupted a second time after step {step}: any unfinished work after it was dropped and "
        f"checkpoint-{step} was written; continue with resume: true.")


@contextlib.contextmanager
def interrupted_as_error(what: str, where: str, after: str = "Nothing was changed.") -> Iterator[None]:
    """An interrupt in the block becomes one line: what was interrupted, and what state is left."""
    try:
        yield
    except QloraInterrupted:
        raise
    except KeyboardInterrupt:
        raise QloraInterrupted(f"interrupted while {what}.", where=where, hint=after) from None
