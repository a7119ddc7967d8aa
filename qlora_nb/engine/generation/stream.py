"""The one generation path: prompt ids in, one streamed column per model (base first, then adapters) out.

Every generation goes through :func:`generate_columns`: ``Session.generate``
(one column, no listener), ``Session.compare`` (each prompt's columns, as
``compare_*`` events, :mod:`.generate`), ``Session.stream`` and the playground
(one prompt, as ``stream_*`` events, :func:`stream`). The base column runs
inside peft's ``disable_adapter()``, each adapter column after ``set_adapter``
(the same weights in memory serve every column). Watched columns (a listener,
more than one column) advance one token each in turn (:mod:`.interleave`) so
they fill side by side; otherwise each is one plain ``generate``. The seed is
set before every column and the decoding settings are the same, so a difference between columns
comes from the adapter, not from the sampler. Every flag is restored
afterwards (:func:`~qlora_nb.engine.model.adapters.evaluating`), so it is safe
between a Stop and a Resume of a training run.

The dashboard's probes are the one exception: they decode a batch of held-out
prompts greedily in one ``generate`` call (:mod:`.probes`) because they run at
every evaluation, where N sequential streamed generations would cost N times the
decoding steps; nobody watches them token by token.

Events of :func:`stream` (on ``session.events`` and ``on_event``):

- ``stream_begin`` {prompt, formatted, columns, notes, options}
- ``stream_token`` {column, text, delta, ids, n_tokens}: the whole output so far (idempotent) and the
  text this token added (empty while a multi-byte character is incomplete)
- ``stream_column`` {column, cell}: a finished column (:func:`~.columns.column_cell`; the base's
  marks against the first adapter come with ``stream_end``, when that adapter has run)
- ``stream_end`` {result}: :meth:`StreamResult.to_event`
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...config import GenerateConfig
from ..model.adapters import BASE, use_adapter
from .attached import attached, model_for
from .columns import choose_columns, column_cell, column_cells, mark_sources
from .compare_result import side_by_side

TokenListener = Callable[[str, list[int], str, str], None]  # (column, ids so far, text so far, delta)


# --------------------------------------------------------------------------- streaming
def make_streamer(tokenizer, emit: Callable[[list[int], str, str], None]):
    """A transformers streamer that calls ``emit(ids, text, delta)`` for every new token.

    Why not transformers' ``TextIteratorStreamer``: it is built for a second
    thread (``generate`` runs in a worker and the caller iterates a queue), but
    here ``generate`` runs on the kernel's main thread, where a Stop (SIGINT)
    and the comm messages of the widgets arrive, and the listener is called
    in place; it hands out text only, while the views and the diff need the
    token ids; and it holds text back until a word boundary, which would make a
    column jump by words and break the one-event-per-token count the views and
    tests rely on. This one decodes the whole output at each token (so ``text``
    is idempotent and a throttled view may drop events) and only holds back a
    character whose UTF-8 bytes are incomplete.
    """
    from transformers.generation.streamers import BaseStreamer

    class _Streamer(BaseStreamer):
        """Skips the prompt, then reports every new token with the text decoded so far."""

        def __init__(self) -> None:
            self.ids: list[int] = []
            self.prompt_seen = False
            self.text = ""

        def put(self, value) -> None:
            if value.dim() > 1:
                value = value[0]
            if not self.prompt_seen:
                self.prompt_seen = True
                return
            self.ids += [int(v) for v in value.tolist()]
            text = tokenizer.decode(self.ids, skip_special_tokens=True)
            delta = ""
            if not text.endswith("\ufffd"):
                delta = text[len(self.text):] if text.startswith(self.text) else text
                self.text = text
            emit(self.ids, self.text, delta)

        def end(self) -> None:
            text = tokenizer.decode(self.ids, skip_special_tokens=True)
            if text != self.text:  # the output ended inside a multi-byte character: flush what is left
                delta = text[len(self.text):] if text.startswith(self.text) else text
                self.text = text
                emit(self.ids, self.text, delta)

    return _Streamer()


def generate_kwargs(session, cfg: GenerateConfig) -> dict[str, Any]:
    tok = session.tokenizer
    kw: dict[str, Any] = {"max_new_tokens": cfg.max_new_tokens, "do_sample": cfg.sample,
                          "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id}
    # Stop where training taught the model to stop (the tokenizer's eos ends every completion) as well as at the
    # model's own end tokens.
    gen_eos = getattr(getattr(session.model, "generation_config", None), "eos_token_id", None)
    eos = [*(gen_eos if isinstance(gen_eos, list) else [gen_eos]), tok.eos_token_id]
    eos = [e for i, e in enumerate(eos) if e is not None and e not in eos[:i]]
    if eos:
        kw["eos_token_id"] = eos
    if cfg.sample:
        kw.update(temperature=cfg.temperature, top_p=cfg.top_p)
    else:  # greedy: clear sampling defaults a model's generation_config may carry
        kw.update(temperature=None, top_p=None, top_k=None)
    return kw


def _generate(session, ids: list[int], cfg: GenerateConfig, streamer=None, model=None) -> list[int]:
    import torch

    input_ids = torch.tensor([ids], device=session.device)
    torch.manual_seed(cfg.seed)
    with torch.no_grad():
        out = (model or session.model).generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                     streamer=streamer, **generate_kwargs(session, cfg))
    return [int(t) for t in out[0, len(ids):].tolist()]


def token_logprobs(session, prompt_ids: list[int], new_ids: list[int], model=None) -> list[float]:
    """log p(token) of each generated token under the model as it is configured now (default: the session's)."""
    import torch

    if not new_ids:
        return []
    full = torch.tensor([prompt_ids + new_ids], device=session.device)
    with torch.no_grad():
        logits = (model or session.model)(input_ids=full, attention_mask=torch.ones_like(full)).logits
    logp = torch.log_softmax(logits[0, len(prompt_ids) - 1: -1].float(), dim=-1)
    target = torch.tensor(new_ids, device=logp.device)
    return logp.gather(1, target[:, None])[:, 0].tolist()


def generate_columns(session, ids: list[int], columns: list[str], cfg: GenerateConfig, state, *,
                     on_token: TokenListener | None = None,
                     on_column: Callable[[str, dict[str, Any]], None] | None = None,
                     logprobs: bool = False) -> dict[str, dict[str, Any]]:
    """Generate ``ids`` once per column on the same weights; ``{column: {ids, seconds, logprobs?, logprob_delta?}}``.

    Runs inside the caller's ``evaluating(session.model)`` (``state``). ``on_token`` hears every token as it
    comes, ``on_column`` each finished column. With ``logprobs`` each column gets the log-probability of its
    own tokens, and each adapter column ``logprob_delta``: log p_adapter - log p_base of its tokens.
    """
    if on_token is not None and len(columns) > 1:  # watched side by side: the columns fill together
        outputs = _together(session, ids, columns, cfg, state, on_token)
    else:
        outputs = {c: _one_column(session, ids, c, cfg, state, on_token) for c in columns}
    runs: dict[str, dict[str, Any]] = {}
    for column in columns:
        out, seconds = outputs[column]
        run: dict[str, Any] = {"ids": out, "seconds": seconds}
        if logprobs:
            with _column(session, column, state) as model:
                run["logprobs"] = token_logprobs(session, ids, out, model)
        if logprobs and column != BASE:
            with use_adapter(session.model, BASE, state):
                base = token_logprobs(session, ids, out)
            run["logprob_delta"] = [a - b for a, b in zip(run["logprobs"], base, strict=True)]
        runs[column] = run
        if on_column is not None:
            on_column(column, run)
    return runs


def _one_column(session, ids: list[int], column: str, cfg: GenerateConfig, state,
                on_token: TokenListener | None) -> tuple[list[int], float]:
    """One plain ``generate`` with ``column``'s adapter (streamed to ``on_token`` when given)."""
    streamer = None
    if on_token is not None:
        def emit(new_ids, text, delta):
            on_token(column, new_ids, text, delta)

        streamer = make_streamer(session.tokenizer, emit)
    with _column(session, column, state) as model:
        started = time.perf_counter()
        out = _generate(session, ids, cfg, streamer, model)
    return out, time.perf_counter() - started


@contextlib.contextmanager
def _column(session, column: str, state):
    """The model serving ``column``: an attached GGUF's as it is, else the session's with that adapter set."""
    model = model_for(session, column)
    if model is not session.model:
        yield model
        return
    with use_adapter(session.model, column, state):
        yield session.model


def _together(session, ids: list[int], columns: list[str], cfg: GenerateConfig, state,
              on_token: TokenListener) -> dict[str, tuple[list[int], float]]:
    """Every column one token in turn (:mod:`.interleave`), so a view shows them filling side by side.

    Only when someone watches: the lockstep costs about 1.15x the plain generates one after the other
    (``benchmarks/chat_overhead.py``), and yields the same tokens (``tests/test_chat.py``).
    """
    from .interleave import generate_together

    tok = session.tokenizer
    shown = dict.fromkeys(columns, "")

    def heard(column: str, new_ids: list[int]) -> None:  # the streamer's rule: hold back an incomplete character
        text = tok.decode(new_ids, skip_special_tokens=True)
        delta = ""
        if not text.endswith("\ufffd"):
            delta = text[len(shown[column]):] if text.startswith(shown[column]) else text
            shown[column] = text
        on_token(column, new_ids, shown[column], delta)

    outputs = generate_together(session, dict.fromkeys(columns, ids), generate_kwargs(session, cfg), cfg.seed,
                                state, heard)
    for column in columns:  # a reply that ended inside a multi-byte character: flush what is left
        out = outputs[column][0]
        text = tok.decode(out, skip_special_tokens=True)
        if text != shown[column]:
            delta = text[len(shown[column]):] if text.startswith(shown[column]) else text
            shown[column] = text
            on_token(column, out, text, delta)
    return outputs


def emitter(session, on_event: Callable[[dict], None] | None) -> Callable[..., None]:
    """``emit(kind, **data)``: an event on ``session.events``, then to ``on_event``."""
    def emit(kind: str, **data: Any) -> None:
        event = session.events.emit(kind, **data)
        if on_event is not None:
            on_event(event)

    return emit


# --------------------------------------------------------------------------- one prompt, streamed
@dataclass
class StreamResult:
    """The columns of one streamed prompt (``cells[name]`` holds the per-column numbers)."""

    prompt: str
    formatted: str
    columns: list[str]
    cells: dict[str, dict[str, Any]]
    options: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_event(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "formatted": self.formatted, "columns": list(self.columns),
                "cells": self.cells, "options": dict(self.options), "notes": list(self.notes)}

    def text(self, width: int = 100) -> str:
        return render_stream_text(self.to_event(), width)

    def __str__(self) -> str:
        return self.text()


def column_stats(cell: dict[str, Any]) -> str:
    """``12 tokens · 31 tok/s · mean log p -0.84`` (what each column's header shows)."""
    parts = [f"{cell.get('n_tokens', 0)} tokens"]
    if cell.get("tokens_per_s"):
        parts.append(f"{cell['tokens_per_s']:.0f} tok/s")
    if cell.get("mean_logprob") is not None:
        parts.append(f"mean log p {cell['mean_logprob']:.2f}")
    return " · ".join(parts)


def render_stream_text(state: dict[str, Any], width: int = 100) -> str:
    """Plain-text columns, with ``»`` where a column first departs from the base."""
    columns = list(state.get("columns") or [])
    cells = state.get("cells") or {}
    lines = [f"prompt: {state.get('prompt', '')}"]
    lines += [f"note: {n}" for n in state.get("notes") or []]
    texts, heads = [], []
    for c in columns:
        cell = cells.get(c) or {}
        tokens, d = cell.get("tokens"), cell.get("diverge_at")
        text = str(cell.get("text", ""))
        if tokens is not None and d is not None and c != BASE:
            text = "".join(tokens[:d]) + "»" + "".join(tokens[d:])
        texts.append(f"({column_stats(cell)})\n{text}")
        heads.append(c)
    if columns:
        lines.append(side_by_side(heads, texts, width))
    return "\n".join(lines)


def stream(session, prompt: str, *, columns: list[str] | None = None, logprobs: bool = False,
           on_event: Callable[[dict], None] | None = None, **options: Any) -> StreamResult:
    """Generate ``prompt`` from the base and each chosen adapter, emitting every token as it comes.

    ``columns``: adapter names (default: every trained adapter; the base always
    comes first, as the reference the others are highlighted against).
    ``options`` are :class:`~qlora_nb.config.GenerateConfig` fields
    (``max_new_tokens``, ``sample``, ``temperature``, ``top_p``, ``seed``, ``chat``).
    """
    from ..model.adapters import evaluating
    from .prompts import encode, format_prompt

    cfg = GenerateConfig.from_options(options)
    chosen, notes = choose_columns(session, [c for c in (columns or []) if c != BASE], cfg.gguf, cfg.engine)
    p = format_prompt(session, prompt, cfg.chat)
    ids = encode(session, p, cfg.max_new_tokens, "prompt")
    emit = emitter(session, on_event)
    opts = {**cfg.to_dict(), "logprobs": logprobs}
    emit("stream_begin", prompt=p.shown, formatted=p.formatted, columns=list(chosen), notes=list(notes), options=opts)
    tok = session.tokenizer
    runs: dict[str, dict[str, Any]] = {}

    def on_token(column: str, new_ids: list[int], text: str, delta: str) -> None:
        emit("stream_token", column=column, text=text, delta=delta, ids=list(new_ids), n_tokens=len(new_ids))

    def on_column(column: str, run: dict[str, Any]) -> None:
        runs[column] = run
        reference = None if column == BASE else runs[BASE]["ids"]  # the base: no adapter has run yet
        emit("stream_column", column=column, cell=column_cell(tok, column, run, reference))

    with evaluating(session.model) as state:
        generate_columns(session, ids, chosen, cfg, state, on_token=on_token, on_column=on_column, logprobs=logprobs)
    cells = column_cells(tok, chosen, runs)
    mark_sources(cells, attached(session))
    result = StreamResult(p.shown, p.formatted, list(chosen), cells, opts, notes)
    emit("stream_end", result=result.to_event())
    return result
