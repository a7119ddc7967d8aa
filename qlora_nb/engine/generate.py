"""Base vs adapted generations from one model in memory.

The base column runs inside peft's ``disable_adapter()`` and each adapter
column after ``set_adapter(name)``: the same quantized weights serve every
column, so a comparison never holds a second copy of the model. Every
generation is preceded by ``torch.manual_seed(seed)`` and uses the same
decoding settings, so a difference between columns comes from the adapter,
not from the sampler.

Prompts are formatted the way training saw them (see
:mod:`qlora_nb.data.template`): held-out rows through the training template,
free text through the training template or the chat template.

Events (on ``session.events`` and ``on_event``):

- ``compare_begin`` {prompts, columns, options, notes}
- ``compare_token`` {row, column, text, delta, n_tokens}: ``text`` is the whole
  output decoded so far (idempotent, so a throttled view can drop events),
  ``delta`` the text added by this token (empty while a multi-byte character
  is incomplete; an output that ends inside one gets a last event with the
  same ``n_tokens`` flushing it);
- ``compare_row`` {row, record}: a finished row with diffs and divergence;
- ``compare_end`` {result}: :meth:`CompareResult.to_event`.

Peft switches ``requires_grad`` when adapters are enabled, disabled or
switched; the comparison puts every flag back at once (so the ledger never
sees adapter bytes move) and restores train/eval mode and the active adapter
afterwards. :func:`~qlora_nb.engine.quantize.guard_cpu_repack` runs before
and after, so eval-mode generation cannot cut the gradients of later training.
"""

from __future__ import annotations

import contextlib
import difflib
import textwrap
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

from ..config import GenerateConfig
from ..errors import QloraError, did_you_mean

BASE = "base"
_RESERVED = {"prompt", "formatted", "reference", "base", "base_ids", "adapted", "adapted_ids", "adapter",
             "diverge_at", "changed", "columns"}


# ------------------------------------------------------------------ results
class CompareResult(list):
    """A list of records, one per prompt.

    Each record holds ``prompt``, ``formatted`` (what the model saw) and its
    ``prompt_ids``, ``base``,
    ``base_ids``, ``adapted``/``adapted_ids`` (the first adapter column, the
    active adapter unless ``adapters`` says otherwise), one key per adapter name
    (plus ``<name>_ids``), ``diverge_at`` (first token index where the adapted
    output differs from the base, None when equal), ``changed`` (any adapter
    column differs) and ``columns`` (per column: text, ids, tokens, diff mask,
    diverge_at, optional ``logprob_delta``). ``notes`` explain left-out columns.
    """

    def __init__(self, records: list[dict[str, Any]], columns: list[str], options: dict[str, Any],
                 notes: list[str]) -> None:
        super().__init__(records)
        self.columns = columns
        self.options = options
        self.notes = notes

    @property
    def adapters(self) -> list[str]:
        return [c for c in self.columns if c != BASE]

    @property
    def changed_count(self) -> int:
        return sum(1 for r in self if r["changed"])

    def to_pandas(self):
        import pandas as pd

        rows = []
        for r in self:
            row = {"prompt": r["prompt"], BASE: r[BASE]}
            for c in self.adapters:
                row[c] = r["columns"][c]["text"]
            row.update(diverge_at=r["diverge_at"], changed=r["changed"])
            rows.append(row)
        return pd.DataFrame(rows, columns=["prompt", *self.columns, "diverge_at", "changed"])

    def to_event(self) -> dict[str, Any]:
        """JSON-safe form for widgets."""
        return {"columns": list(self.columns), "options": dict(self.options), "notes": list(self.notes),
                "rows": [_row_event(r) for r in self], "changed_count": self.changed_count, "total": len(self)}

    def text(self, width: int = 100) -> str:
        return render_text(self.to_event(), width=width)

    def __str__(self) -> str:
        return self.text()

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(self.text())

    def widget(self):
        """The side-by-side widget for this result (also shown by ``%qlora_compare``)."""
        from ..views.compare import CompareWidget

        return CompareWidget.from_result(self)


def _row_event(record: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("prompt", "formatted", "reference", "diverge_at", "changed")
    return {**{k: record.get(k) for k in keep}, "columns": record["columns"]}


def render_text(state: Mapping[str, Any], width: int = 100) -> str:
    """A plain-text side-by-side view of a comparison (terminal, nbclient, logs)."""
    columns = list(state.get("columns") or [])
    rows = state.get("rows") or []
    total = state.get("total", len(rows))
    lines = [f"{state.get('changed_count', 0)} of {total} prompts changed"]
    lines += [f"note: {n}" for n in state.get("notes") or []]
    for i, row in enumerate(rows):
        lines.append("")
        lines.append(f"[{i}] prompt: {_short(row.get('prompt') or '', width * 2)}")
        texts = []
        for c in columns:
            cell = (row.get("columns") or {}).get(c) or {}
            texts.append(_marked_text(cell))
        lines.append(side_by_side(columns, texts, width))
        d = row.get("diverge_at")
        if len(columns) > 1:
            lines.append("outputs identical" if not row.get("changed") else
                         f"first difference at token {d}" if d is not None else "changed")
    return "\n".join(lines)


def _short(text: str, n: int) -> str:
    text = text.replace("\n", "⏎")
    return text if len(text) <= n else text[: n - 1] + "…"


def _marked_text(cell: Mapping[str, Any]) -> str:
    """The cell's text with ``»`` at its first divergence from the base."""
    tokens = cell.get("tokens")
    d = cell.get("diverge_at")
    if tokens is None or d is None:
        return str(cell.get("text", ""))
    return "".join(tokens[:d]) + "»" + "".join(tokens[d:])


def side_by_side(columns: list[str], texts: list[str], width: int = 100) -> str:
    """Columns of wrapped text joined with `` │ ``."""
    n = max(1, len(columns))
    col_w = max(12, (width - 3 * (n - 1)) // n)
    wrapped = []
    for name, text in zip(columns, texts, strict=True):
        body: list[str] = []
        for para in str(text).split("\n"):
            body += textwrap.wrap(para, col_w, replace_whitespace=False, drop_whitespace=False) or [""]
        wrapped.append([name.upper(), "─" * min(col_w, max(4, len(name)))] + body)
    height = max(len(w) for w in wrapped)
    out = []
    for i in range(height):
        out.append(" │ ".join((w[i] if i < len(w) else "").ljust(col_w) for w in wrapped).rstrip())
    return "\n".join(out)


# ------------------------------------------------------------- formatting
class Prompt(NamedTuple):
    shown: str  # what the user wrote (or the rendered row)
    formatted: str  # the text the model sees
    reference: str | None  # a data row's expected completion
    chat: bool  # rendered by the chat template (then tokenized without added special tokens, as in training)


def format_prompt(session, prompt: Any, chat: bool | None = None, index: int | None = None) -> Prompt:
    """The :class:`Prompt` for free text or a data row.

    Rows (dicts) are rendered with the training template exactly as in
    training and carry their expected completion as ``reference``. Free text
    follows ``chat``: None formats it as training prompts were formatted (chat
    template or training template, see ``free_text_prompt``), True forces the
    chat template, False leaves out the chat template.
    """
    from ..data.template import Template, chat_prompt, free_text_prompt, row_prompt

    where = "prompt" if index is None else f"prompt {index}"
    template = getattr(session, "template", None)
    if isinstance(prompt, Mapping):
        formatted = row_prompt(session, prompt)
        if not formatted.strip():
            raise QloraError("this row renders to an empty prompt.", where=where,
                             hint="Check that the row has the template's prompt fields.")
        reference = None
        if isinstance(template, Template):
            with contextlib.suppress(KeyError):
                reference = template.completion(prompt)
        elif "output" in prompt:
            reference = str(prompt["output"])
        return Prompt(formatted, formatted, reference, bool(getattr(session, "chat_format", False)))
    if not isinstance(prompt, str):
        raise QloraError(f"a prompt must be text (or a data row), got {type(prompt).__name__}.", where=where,
                         hint='Pass "a prompt", a list of prompts, or rows such as session.val_rows[:8].')
    if not prompt.strip():
        raise QloraError("the prompt is empty.", where=where, hint="Write the text the model should continue.")
    has_chat = bool(getattr(session.tokenizer, "chat_template", None))
    if chat is True:
        if not has_chat:
            raise QloraError("this model's tokenizer has no chat template.", where="compare option 'chat'",
                             hint="Leave chat unset (or false) to use the prompt as written.")
        return Prompt(prompt, chat_prompt(session.tokenizer, prompt), None, True)
    chat_format = bool(getattr(session, "chat_format", False))
    if chat is False:
        if isinstance(template, Template) and not chat_format:
            return Prompt(prompt, template.prompt_from_text(prompt), None, False)
        return Prompt(prompt, prompt, None, False)
    uses_chat = (chat_format or not isinstance(template, Template)) and has_chat  # as free_text_prompt decides
    return Prompt(prompt, free_text_prompt(session, prompt), None, uses_chat)


def normalize_prompts(prompts: Any) -> list[Any]:
    """A str, a list of str/rows, a pandas Series or DataFrame -> list of str or dict rows."""
    if isinstance(prompts, (str, Mapping)):
        return [prompts]
    if hasattr(prompts, "to_dict") and hasattr(prompts, "columns"):  # DataFrame
        return list(prompts.to_dict(orient="records"))
    if hasattr(prompts, "tolist"):  # Series / array
        prompts = prompts.tolist()
    if isinstance(prompts, (list, tuple)):
        if not prompts:
            raise QloraError("no prompts given.", where="prompt", hint='Pass "a prompt" or a list of prompts.')
        return list(prompts)
    raise QloraError(f"prompts must be text or a list, got {type(prompts).__name__}.", where="prompt",
                     hint='Pass "a prompt", a list of prompts, or rows such as session.val_rows[:8].')


def context_window(session) -> int | None:
    model = session.model
    cfg = getattr(model.get_base_model() if hasattr(model, "get_base_model") else model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def encode(session, prompt: Prompt, max_new_tokens: int, where: str) -> list[int]:
    """Token ids of a formatted prompt, checked against the context window.

    Special tokens are added exactly as training adds them to prompts
    (:func:`qlora_nb.data.collate`): not for chat-rendered text, whose template
    writes them itself.
    """
    ids = list(session.tokenizer(prompt.formatted, add_special_tokens=not prompt.chat)["input_ids"])
    window = context_window(session)
    if window is not None and len(ids) + max_new_tokens > window:
        room = window - max_new_tokens
        raise QloraError(f"the prompt is {len(ids)} tokens; with max_new_tokens={max_new_tokens} that is more "
                         f"than the model's context window of {window} tokens.", where=where,
                         hint=f"Shorten the prompt to at most {max(room, 0)} tokens or lower --max-new-tokens.")
    return ids


# --------------------------------------------------------------- adapters
def _adapter_names(session) -> list[str]:
    names = [n for n in session.adapters if n in getattr(session.model, "peft_config", {})]
    active = _active(session.model)
    return sorted(names, key=lambda n: n != active)  # the active adapter first, then session order


def _active(model) -> str | None:
    name = getattr(model, "active_adapter", None)
    return name if isinstance(name, str) else (name[0] if name else None)


def is_untrained(model, name: str) -> bool:
    """True when every LoRA B matrix of adapter ``name`` is zero: the adapter then equals the base exactly."""
    found = False
    for pname, p in model.named_parameters():
        parts = pname.split(".")
        if name in parts and any(part in ("lora_B", "lora_embedding_B") for part in parts):
            found = True
            if bool(p.detach().ne(0).any()):
                return False
    return found


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
                hint = did_you_mean(name, known) if known else "This session has no adapters."
                raise QloraError(f"no adapter named {name!r} in this session.", where="--adapters", hint=hint)
            if name not in chosen:
                chosen.append(name)
    else:
        chosen = known
    if not chosen:
        notes.append("this session has no adapter yet, so only the base model is shown.")
    trained = []
    for name in chosen:
        if is_untrained(session.model, name):
            notes.append(f"adapter {name!r} has not been trained yet (its LoRA B matrices are all zero, so its "
                         "outputs equal the base); showing the base only for it. Train with %%qlora_train.")
        else:
            trained.append(name)
    return [BASE, *trained], notes


class _ModelState:
    """Snapshot of what peft and eval mode change, restored after generating."""

    def __init__(self, model) -> None:
        self.model = model
        self.active = getattr(model, "active_adapter", None)
        self.training = [(m, m.training) for m in model.modules()]
        self.grad = [(p, p.requires_grad) for p in model.parameters()]

    def reapply_grad(self) -> None:
        for p, flag in self.grad:
            if p.requires_grad != flag:
                p.requires_grad_(flag)

    def restore(self) -> None:
        if self.active is not None and hasattr(self.model, "set_adapter"):
            self.model.set_adapter(self.active)
        for m, flag in self.training:
            m.training = flag
        self.reapply_grad()


@contextlib.contextmanager
def use_column(model, column: str, state: _ModelState) -> Iterator[None]:
    """The model as the base (adapters disabled) or with adapter ``column`` active, weights untouched."""
    if column == BASE and not hasattr(model, "disable_adapter"):  # a plain (merged or unwrapped) model
        yield
    elif column == BASE:
        with model.disable_adapter():
            state.reapply_grad()
            yield
    else:
        model.set_adapter(column)
        state.reapply_grad()
        yield


@contextlib.contextmanager
def generating(session) -> Iterator[_ModelState]:
    """Eval mode with every flag restored afterwards, and the CPU repack guard on both sides."""
    from .quantize import guard_cpu_repack

    model = session.model
    state = _ModelState(model)
    guard_cpu_repack(model)
    model.eval()
    try:
        yield state
    finally:
        state.restore()
        guard_cpu_repack(model)


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
        raise QloraError(f"no adapter named {adapter!r} in this session.", where="adapter",
                         hint=did_you_mean(adapter, [BASE, *_adapter_names(session)]))
    ids = encode(session, format_prompt(session, prompt, cfg.chat), cfg.max_new_tokens, "prompt")
    column = adapter or _active(session.model) or BASE
    with generating(session) as state, use_column(session.model, column, state):
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
    with generating(session) as state:
        for row, (shown, formatted, reference, ids) in enumerate(prepared):
            outputs: dict[str, list[int]] = {}
            for column in columns:
                def on_token(new_ids, text, delta, _row=row, _col=column):
                    emit("compare_token", row=_row, column=_col, text=text, delta=delta, n_tokens=len(new_ids))

                with use_column(session.model, column, state):
                    outputs[column] = _generate(session, ids, cfg, _make_streamer(tok, on_token))
            deltas: dict[str, list[float]] = {}
            if logprobs and len(columns) > 1:
                for column in columns[1:]:
                    with use_column(session.model, column, state):
                        adapted = _token_logprobs(session, ids, outputs[column])
                    with use_column(session.model, BASE, state):
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
