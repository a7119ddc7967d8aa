"""Several columns (the base and adapters) generated together, one token each in turn, from the one model in memory.

The playground review found columns streamed one after the other: the adapter column showed "0 tokens" until the
base had finished. Here every column advances in lockstep, so they fill side by side.

How: transformers' ``generate`` keeps its own decoding loop (cache, logits processors, stopping criteria, eos), run
once per column in its own thread. Each column's streamer hands a baton back to the calling thread after every
token; the calling thread switches the adapter (peft's ``set_adapter`` / ``disable_adapter_layers``), restores that
column's random-number state and passes the baton to the column whose turn it is. Only the thread holding the
baton touches the model, so each column computes exactly what a plain ``generate`` with that adapter computes:
same kernels, same shapes, same seed. peft's mixed adapter batches (``adapter_names=[...]``) would read the
weights once per step, but they pad rows of different lengths and change the matrix shapes, and bitsandbytes on
CPU uses a different 4-bit kernel for one row than for several, so a column's greedy reply could differ from the
plain one; the equality is what a comparison rests on, so lockstep generation was chosen.

Events and text are produced in the calling thread only (widgets and the event bus never see a worker thread).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .adapters import BASE, ModelState

_POLL = 0.1  # seconds between checks for Ctrl-C / Stop while a column computes its token


class _Aborted(Exception):
    """Raised inside a column's ``generate`` when the others were cancelled (an error, Ctrl-C)."""


@dataclass
class _Column:
    name: str
    ids: list[int]
    reports: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    turn: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    thread: threading.Thread | None = None
    out: list[int] = field(default_factory=list)
    rng: Any = None
    seconds: float = 0.0
    done: bool = False
    abort: bool = False


def _baton_streamer(col: _Column):
    from transformers.generation.streamers import BaseStreamer

    class _Baton(BaseStreamer):
        """Skips the prompt; after each new token reports it and waits for the column's next turn."""

        prompt_seen = False

        def put(self, value) -> None:
            if not self.prompt_seen:
                self.prompt_seen = True
                return
            if value.dim() > 1:
                value = value[0]
            col.reports.put(("token", [int(v) for v in value.tolist()]))
            col.turn.acquire()
            if col.abort:
                raise _Aborted

        def end(self) -> None:
            pass

    return _Baton()


def activate(model, column: str, state: ModelState) -> None:
    """Make ``column`` the model's behaviour: adapters disabled for the base, else that adapter active."""
    tuner = getattr(model, "base_model", None)
    if not hasattr(tuner, "enable_adapter_layers"):  # a plain (merged or unwrapped) model: only the base exists
        return
    if column == BASE:
        tuner.disable_adapter_layers()
    else:
        tuner.enable_adapter_layers()
        model.set_adapter(column)
    state.reapply_grad()


def _rng_get(device: str) -> Any:
    import torch

    cuda = torch.cuda.get_rng_state() if str(device).startswith("cuda") else None
    return torch.get_rng_state(), cuda


def _rng_set(saved: Any) -> None:
    import torch

    cpu, cuda = saved
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda)


def generate_together(session, prompts: dict[str, list[int]], generate: Callable[[list[int], Any], list[int]],
                      state: ModelState, on_token: Callable[[str, list[int]], None],
                      should_stop: Callable[[], bool] | None = None) -> dict[str, tuple[list[int], float]]:
    """Generate every column's reply in lockstep; ``{column: (new token ids, seconds spent on it)}``.

    ``prompts``: column -> prompt token ids (columns in display order). ``generate(ids, streamer)`` is the one
    generation call (:func:`qlora_nb.engine.generate._generate`): it seeds, then runs ``model.generate``.
    ``on_token(column, ids_so_far)`` is called in this thread after each token. Call it inside
    :func:`~qlora_nb.engine.adapters.evaluating` (``state``); the adapter it leaves active is restored there.
    ``should_stop()`` true ends every column where it is (the replies so far are returned).
    """
    cols = [_Column(name, list(ids)) for name, ids in prompts.items()]

    def work(col: _Column) -> None:
        try:
            col.reports.put(("done", generate(col.ids, _baton_streamer(col))))
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread, which raises it
            col.reports.put(("error", exc))

    def cancel() -> None:
        for c in cols:
            c.abort = True
            c.turn.release()
        for c in cols:
            if c.thread is not None:
                c.thread.join()

    try:
        while not all(c.done for c in cols):
            for col in cols:
                if col.done:
                    continue
                activate(session.model, col.name, state)
                started = time.perf_counter()
                if col.thread is None:  # first turn: the column seeds itself inside generate()
                    col.thread = threading.Thread(target=work, args=(col,), daemon=True, name=f"qlora-{col.name}")
                    col.thread.start()
                else:
                    _rng_set(col.rng)
                    col.turn.release()
                kind, value = _wait(col)
                col.seconds += time.perf_counter() - started
                col.rng = _rng_get(session.device)
                if kind == "token":
                    col.out += value
                    on_token(col.name, list(col.out))
                elif kind == "done":
                    col.out, col.done = list(value), True
                    col.thread.join()
                else:
                    raise value
                if should_stop is not None and should_stop():
                    cancel()
                    return {c.name: (c.out, c.seconds) for c in cols}
    except BaseException:
        cancel()
        raise
    finally:
        tuner = getattr(session.model, "base_model", None)
        if hasattr(tuner, "enable_adapter_layers"):  # the base column disabled them; the adapter is restored by state
            tuner.enable_adapter_layers()
    return {c.name: (c.out, c.seconds) for c in cols}


def _wait(col: _Column) -> tuple[str, Any]:
    """The column's next report; polls so Ctrl-C reaches the calling thread while a token is computed."""
    while True:
        try:
            return col.reports.get(timeout=_POLL)
        except queue.Empty:
            continue
