"""Base vs adapted generations from one model in memory.

The base column runs inside peft's ``disable_adapter()`` and each adapter
column after ``set_adapter(name)``: the same quantized weights serve every
column, so a comparison never holds a second copy of the model. Every
generation is preceded by ``torch.manual_seed(seed)`` and uses the same
decoding settings, so a difference between columns comes from the adapter,
not from the sampler.

Prompts are formatted the way training saw them (:mod:`.prompts`); the result
and its text form are in :mod:`.compare_result`.

Events (on ``session.events`` and ``on_event``):

- ``compare_begin`` {prompts, columns, options, notes}
- ``compare_token`` {row, column, text, delta, n_tokens}: ``text`` is the whole
  output decoded so far (idempotent, so a throttled view can drop events),
  ``delta`` the text added by this token (empty while a multi-byte character
  is incomplete; an output that ends inside one gets a last event with the
  same ``n_tokens`` flushing it);
- ``compare_row`` {row, record}: a finished row with diffs and divergence;
- ``compare_end`` {result}: :meth:`CompareResult.to_event`.

Columns switch inside :func:`~qlora_nb.engine.adapters.evaluating`, which puts
every ``requires_grad`` flag, train/eval mode and the active adapter back
afterwards and runs the CPU repack guard before and after.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from ..config import GenerateConfig
from ..data.scoring import exact_match
from ..errors import QloraError
from .adapters import BASE, active_adapter, evaluating, is_trained, no_adapter, use_adapter
from .compare_result import _RESERVED, CompareResult, _row_event
from .prompts import encode, format_prompt, normalize_prompts


# --------------------------------------------------------------- columns
def _adapter_names(session) -> list[str]:
    names = [n for n in session.adapters if n in getattr(session.model, "peft_config", {})]
    active = active_adapter(session.model)
    return sorted(names, key=lambda n: n != active)  # the active adapter first, then session order


def choose_columns(session, requested: list[str]) -> tuple[list[str], list[str]]:
    """``(columns, notes)``: base plus the requested (default: all) adapters that are trained."""
    known = _adapter_names(session)
    notes: list[str] = []
    if requested:
        chosen = []
        for name in requested:
            if name == BASE:
                continue
            if name not in known:
                if name in session.adapters:
                    raise QloraError(f"adapter {name!r} is listed in the session but not loaded in the model.",
                                     where="--adapters", hint="Load it again with %qlora_load_adapter.")
                raise no_adapter(name, known, "--adapters")
            if name not in chosen:
                chosen.append(name)
    else:
        chosen = known
    if not chosen:
        notes.append("this session has no adapter yet, so only the base model is shown.")
    trained = []
    for name in chosen:
        if not is_trained(session.model, name):
            notes.append(f"adapter {name!r} has not been trained yet (its LoRA B matrices are all zero, so its "
                         "outputs equal the base); showing the base only for it. Train with %%qlora_train.")
        else:
            trained.append(name)
    return [BASE, *trained], notes


# ---------------------------------------------------------------- decoding
def token_pieces(tokenizer, ids: list[int]) -> list[str]:
    """The text each token adds; an incomplete multi-byte character waits for the token that completes it."""
    pieces, shown = [], ""
    for i in range(len(ids)):
        text = tokenizer.decode(ids[: i + 1], skip_special_tokens=True)
        if text.endswith("\ufffd") and i < len(ids) - 1:
            pieces.append("")
            continue
        if text.startswith(shown):
            pieces.append(text[len(shown):])
        else:  # the tokenizer rewrote earlier text (whitespace clean-up): show what changed
            common = len(_commonprefix(shown, text))
            pieces.append(text[common:])
        shown = text
    return pieces


def _commonprefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]


def _make_streamer(tokenizer, emit: Callable[[list[int], str, str], None]):
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


def _generate_kwargs(session, cfg: GenerateConfig) -> dict[str, Any]:
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


def _generate(session, ids: list[int], cfg: GenerateConfig, streamer=None) -> list[int]:
    import torch

    model = session.model
    input_ids = torch.tensor([ids], device=session.device)
    torch.manual_seed(cfg.seed)
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer,
                             **_generate_kwargs(session, cfg))
    return [int(t) for t in out[0, len(ids):].tolist()]


def _token_logprobs(session, prompt_ids: list[int], new_ids: list[int]) -> list[float]:
    """log p(token) of each generated token under the model as it is configured now."""
    import torch

    if not new_ids:
        return []
    full = torch.tensor([prompt_ids + new_ids], device=session.device)
    with torch.no_grad():
        logits = session.model(input_ids=full, attention_mask=torch.ones_like(full)).logits
    logp = torch.log_softmax(logits[0, len(prompt_ids) - 1: -1].float(), dim=-1)
    target = torch.tensor(new_ids, device=logp.device)
    return logp.gather(1, target[:, None])[:, 0].tolist()


def diverge_index(a: list[int], b: list[int]) -> int | None:
    """First index where two token sequences differ (the shorter length when one is a prefix), None if equal."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def diff_mask(ids: list[int], other: list[int]) -> list[bool]:
    """True for tokens of ``ids`` that are not part of a common run with ``other`` (difflib alignment)."""
    mask = [True] * len(ids)
    for block in difflib.SequenceMatcher(a=ids, b=other, autojunk=False).get_matching_blocks():
        for i in range(block.a, block.a + block.size):
            mask[i] = False
    return mask


# ---------------------------------------------------------------- public
def generate_one(session, prompt: str, adapter: str | None = None, **options: Any) -> str:
    """One generation from ``prompt``: the active adapter (None), a named adapter, or ``"base"``."""
    cfg = GenerateConfig.from_options(options)
    if adapter is not None and adapter != BASE and adapter not in _adapter_names(session):
        raise no_adapter(adapter, [BASE, *_adapter_names(session)])
    ids = encode(session, format_prompt(session, prompt, cfg.chat), cfg.max_new_tokens, "prompt")
    column = adapter or active_adapter(session.model) or BASE
    with evaluating(session.model) as state, use_adapter(session.model, column, state):
        new = _generate(session, ids, cfg)
    return session.tokenizer.decode(new, skip_special_tokens=True)


def compare(session, prompts: Any, on_event: Callable[[dict], None] | None = None, *, logprobs: bool = False,
            **options: Any) -> CompareResult:
    """Generate each prompt from the base and from each adapter, on the same weights and seed.

    ``options`` are :class:`~qlora_nb.config.GenerateConfig` fields. With
    ``logprobs=True`` each adapter token also gets ``log p_adapter - log p_base``
    (``columns[name]["logprob_delta"]``), for shading by how much the adapter
    changed it. Prompts are checked (empty, too long for the context window)
    before anything is generated.
    """
    cfg = GenerateConfig.from_options(options)
    items = normalize_prompts(prompts)
    columns, notes = choose_columns(session, cfg.adapters)
    prepared = []
    for i, item in enumerate(items):
        where = "prompt" if len(items) == 1 else f"prompt {i}"
        p = format_prompt(session, item, cfg.chat, None if len(items) == 1 else i)
        prepared.append((p.shown, p.formatted, p.reference, encode(session, p, cfg.max_new_tokens, where)))

    def emit(kind: str, **data: Any) -> None:
        event = session.events.emit(kind, **data)
        if on_event is not None:
            on_event(event)

    opts = {**cfg.to_dict(), "logprobs": logprobs}
    emit("compare_begin", prompts=[p[0] for p in prepared], columns=list(columns), options=opts, notes=list(notes))
    records: list[dict[str, Any]] = []
    tok = session.tokenizer
    with evaluating(session.model) as state:
        for row, (shown, formatted, reference, ids) in enumerate(prepared):
            outputs: dict[str, list[int]] = {}
            for column in columns:
                def on_token(new_ids, text, delta, _row=row, _col=column):
                    emit("compare_token", row=_row, column=_col, text=text, delta=delta, n_tokens=len(new_ids))

                with use_adapter(session.model, column, state):
                    outputs[column] = _generate(session, ids, cfg, _make_streamer(tok, on_token))
            deltas: dict[str, list[float]] = {}
            if logprobs and len(columns) > 1:
                for column in columns[1:]:
                    with use_adapter(session.model, column, state):
                        adapted = _token_logprobs(session, ids, outputs[column])
                    with use_adapter(session.model, BASE, state):
                        base = _token_logprobs(session, ids, outputs[column])
                    deltas[column] = [a - b for a, b in zip(adapted, base, strict=True)]
            record = _record(tok, shown, formatted, reference, columns, outputs, deltas)
            record["prompt_ids"] = ids
            records.append(record)
            emit("compare_row", row=row, record=_row_event(record))
    result = CompareResult(records, list(columns), opts, notes)
    emit("compare_end", result=result.to_event())
    return result


def _record(tok, shown: str, formatted: str, reference: str | None, columns: list[str],
            outputs: dict[str, list[int]], deltas: dict[str, list[float]]) -> dict[str, Any]:
    base_ids = outputs[BASE]
    first = columns[1] if len(columns) > 1 else None
    cells: dict[str, dict[str, Any]] = {}
    for column in columns:
        ids = outputs[column]
        if column == BASE:
            other = outputs[first] if first else ids
            d = None
        else:
            other = base_ids
            d = diverge_index(ids, base_ids)
        cells[column] = {
            "text": tok.decode(ids, skip_special_tokens=True),
            "ids": ids,
            "tokens": token_pieces(tok, ids),
            "diff": diff_mask(ids, other),
            "diverge_at": d if column != BASE else (diverge_index(ids, other) if first else None),
            "changed": column != BASE and ids != base_ids,
        }
        if reference is not None:  # a data row (--data val): scored as eval_metric: exact_match scores it
            cells[column]["score"] = exact_match(cells[column]["text"], reference)
        if column in deltas:
            cells[column]["logprob_delta"] = deltas[column]
    record: dict[str, Any] = {
        "prompt": shown, "formatted": formatted, "reference": reference,
        BASE: cells[BASE]["text"], "base_ids": base_ids,
        "adapter": first,
        "adapted": cells[first]["text"] if first else None,
        "adapted_ids": outputs[first] if first else None,
        "diverge_at": cells[first]["diverge_at"] if first else None,
        "changed": any(cells[c]["changed"] for c in columns),
        "columns": cells,
    }
    for column in columns[1:]:
        if column not in _RESERVED and f"{column}_ids" not in _RESERVED:
            record[column] = cells[column]["text"]
            record[f"{column}_ids"] = cells[column]["ids"]
    return record
