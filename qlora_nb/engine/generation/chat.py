"""Multi-turn chat with the base and each adapter side by side: the engine call behind ``session.chat``.

A conversation (the usual list of ``{"role", "content"}`` messages ending with the user's turn) is rendered with
the tokenizer's own ``apply_chat_template(..., add_generation_prompt=True)``, exactly as a chat application would,
and every column (the base, named "base", and each chosen adapter) answers it from the one model in memory, the
columns advancing token by token together (:mod:`.interleave`). Passing a dict ``{column: messages}`` gives each
column its own conversation (the playground's "own history"); a list is the same conversation for all.

The messages are checked before anything is generated, so a wrong role, an out-of-order turn, empty content or a
system-only list is one paragraph naming the message, not a Jinja error from inside the template.

Events (on ``session.events`` and ``on_event``):

- ``chat_begin`` {columns, prompts, messages, options, notes, mode}
- ``chat_token`` {column, text, delta, ids, n_tokens}: the whole reply so far and the text this token added
- ``chat_column`` {column, cell}: a finished column (text, ids, tokens, diff, n_tokens, prompt_tokens, seconds,
  tokens_per_s)
- ``chat_end`` {result}: :meth:`ChatResult.to_event`
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...config import GenerateConfig
from ...errors import QloraError
from ..model.adapters import BASE, evaluating
from .attached import attached
from .columns import choose_columns, diff_mask, token_pieces
from .compare_result import side_by_side
from .interleave import generate_together
from .prompts import Prompt, encode, format_prompt
from .stream import generate_kwargs

ROLES = ("system", "user", "assistant")
EXAMPLE = '[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi!"}]'


class ChatOptions(GenerateConfig):
    """The decoding options of a chat turn (GenerateConfig's fields; errors name the chat)."""

    _kind: ClassVar[str] = "chat option"


# ------------------------------------------------------------------ checks
def _where(where: str, i: int) -> str:
    return f"{where}[{i}]"


def check_messages(messages: Any, where: str = "messages") -> list[dict[str, str]]:
    """The conversation as plain ``{"role", "content"}`` dicts, or one paragraph naming the first bad message.

    Accepted: an optional system message first, then user and assistant turns alternating, starting and ending with
    the user (the reply to generate is the assistant's next turn). System and user text must not be empty; an
    earlier assistant reply may be (a model can end its turn at once).
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, (list, tuple)):
        raise QloraError(f"a conversation is a list of messages, got {type(messages).__name__}.", where=where,
                         hint=f"Pass e.g. {EXAMPLE}.")
    out: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        at = _where(where, i)
        if not isinstance(m, Mapping):
            raise QloraError(f"message {i} is a {type(m).__name__}, not a {{'role', 'content'}} dict.", where=at,
                             hint=f"Write each message as a dict, e.g. {EXAMPLE}.")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            shown = "no role" if role is None else f"role {role!r}"
            raise QloraError(f"message {i} has {shown}.", where=at,
                             hint="Use 'system' (first only), 'user' or 'assistant'.")
        if not isinstance(content, str):
            shown = "no content" if content is None else f"content of type {type(content).__name__}"
            raise QloraError(f"message {i} ({role}) has {shown}.", where=at, hint="Give its text as a str.")
        if not content.strip() and role != "assistant":  # a model may end its turn at once: an empty reply is real
            raise QloraError(f"message {i} ({role}) is empty.", where=at,
                             hint="Write its text, or leave the message out.")
        if role == "system" and i > 0:
            raise QloraError(f"message {i} is a system message after the conversation began.", where=at,
                             hint="Put the system prompt first (one system message at most).")
        if role != "system":
            prev = out[-1]["role"] if out else "system"
            expected = "user" if prev in ("system", "assistant") else "assistant"
            if role != expected:
                what = "the first turn" if prev == "system" else f"message {i - 1} ({prev})"
                raise QloraError(f"message {i} ({role}) follows {what}; turns must alternate user, assistant, "
                                 "user, … starting with the user.", where=at,
                                 hint=f"Make message {i} {'an assistant' if expected == 'assistant' else 'a user'} message, or remove it.")
        out.append({"role": role, "content": content})
    if not any(m["role"] == "user" for m in out):
        what = "only a system message" if out else "no messages"
        raise QloraError(f"the conversation has {what}: there is nothing to reply to.", where=where,
                         hint='Add the user\'s message, e.g. {"role": "user", "content": "Hello"}.')
    if out[-1]["role"] != "user":
        raise QloraError(f"the last message ({len(out) - 1}) is the assistant's, so there is no user turn to reply "
                         "to.", where=_where(where, len(out) - 1),
                         hint="Add the user's next message at the end (or remove the last assistant reply to "
                              "regenerate it).")
    return out


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prefers_chat(session) -> bool:
    """Chat is the playground's default when free text would be chat-formatted: the tokenizer has a chat template
    and the session did not train on a plain prompt template (its adapters then expect that template instead)."""
    from ...data.template import Template

    trained_plain = isinstance(getattr(session, "template", None), Template) and not getattr(session, "chat_format",
                                                                                              False)
    return has_chat_template(session.tokenizer) and not trained_plain


NO_TEMPLATE = ("this model's tokenizer has no chat template (tokenizer.chat_template is empty), so a conversation "
               "cannot be turned into the prompt the model expects.")


def render_prompt(tokenizer: Any, messages: list[dict[str, str]], where: str = "messages") -> str:
    """``apply_chat_template(messages, tokenize=False, add_generation_prompt=True)``, its errors named."""
    if not has_chat_template(tokenizer):
        raise QloraError(NO_TEMPLATE, where=where,
                         hint="Use completion mode instead: %qlora_playground --completion, or session.compare("
                              "\"text to continue\"); or set tokenizer.chat_template to the template the model "
                              "was trained with.")
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # jinja's raise_exception(...) in a template: roles it refuses, and similar
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise QloraError(f"the model's chat template refused this conversation: {first}", where=where,
                         hint="Change the messages as the template asks (some templates take no system message "
                              "or need strictly alternating turns).") from None


# ------------------------------------------------------------------ result
@dataclass
class ChatResult:
    """One reply per column. ``replies[column]`` is the text (the base is "base"); ``prompt`` the rendered prompt."""

    columns: list[str]
    replies: dict[str, str]
    prompts: dict[str, str]
    messages: dict[str, list[dict[str, str]]]
    cells: dict[str, dict[str, Any]]
    options: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    mode: str = "chat"  # chat (same conversation), own (one per column) or completion

    @property
    def prompt(self) -> str:
        """The rendered prompt of the first column (all columns share it unless each has its own history)."""
        return self.prompts[self.columns[0]]

    @property
    def prompt_tokens(self) -> dict[str, int]:
        return {c: self.cells[c]["prompt_tokens"] for c in self.columns}

    @property
    def reply_tokens(self) -> dict[str, int]:
        return {c: self.cells[c]["n_tokens"] for c in self.columns}

    def conversation(self, column: str | None = None) -> list[dict[str, str]]:
        """The column's messages with its reply appended: add the next user turn and call ``chat`` again."""
        column = column or self.columns[0]
        if column not in self.replies:
            raise QloraError(f"no column {column!r} in this result.", where="column",
                             hint=f"Columns: {', '.join(self.columns)}.")
        return [*self.messages[column], {"role": "assistant", "content": self.replies[column]}]

    def to_event(self) -> dict[str, Any]:
        return {"columns": list(self.columns), "replies": dict(self.replies), "prompts": dict(self.prompts),
                "messages": {c: list(m) for c, m in self.messages.items()}, "cells": self.cells,
                "options": dict(self.options), "notes": list(self.notes), "mode": self.mode}

    def text(self, width: int = 100) -> str:
        last = self.messages[self.columns[0]][-1]["content"] if self.messages else ""
        lines = [f"user: {last}"] + [f"note: {n}" for n in self.notes]
        heads = [f"{c} (gguf file)" if self.cells[c].get("source") == "gguf" else c for c in self.columns]
        bodies = [f"({_stats(self.cells[c])})\n{self.replies[c]}" for c in self.columns]
        lines.append(side_by_side(heads, bodies, width))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:  # a plain-text front-end (terminal, nbclient) shows the columns
        return self.text()


def _stats(cell: dict[str, Any]) -> str:
    parts = [f"{cell.get('n_tokens', 0)} tokens"]
    if cell.get("tokens_per_s"):
        parts.append(f"{cell['tokens_per_s']:.0f} tok/s")
    return " · ".join(parts)


# ------------------------------------------------------------------ generation
def _columns_and_messages(session, messages: Any, adapters: list[str] | None, gguf: Any = None,
                          engine: str = "transformers"
                          ) -> tuple[list[str], dict[str, list[dict[str, str]]], list[str], str]:
    messages = _one_message_as_list(messages)
    if isinstance(messages, Mapping):  # own history: one conversation per column
        if adapters is not None:
            raise QloraError("adapters is given twice: by the keys of the messages dict and by adapters=.",
                             where="adapters", hint="Leave adapters out when messages is a {column: messages} dict.")
        names = [str(k) for k in messages]
        if not names:
            raise QloraError("the messages dict is empty.", where="messages",
                             hint='Pass {"base": [...], "<adapter>": [...]} or one list for every column.')
        convs = {str(c): check_messages(m, f"messages[{str(c)!r}]") for c, m in messages.items()}
        chosen, notes = choose_columns(session, [n for n in names if n != BASE], gguf, engine)
        columns = [c for c in chosen if c in names]
        if not columns:
            raise QloraError("no column of the messages dict can answer: " + " ".join(notes), where="messages",
                             hint='Include "base", or train the adapter first.')
        return columns, {c: convs[c] for c in columns}, notes, "own"
    conv = check_messages(messages)
    columns, notes = choose_columns(session, _adapter_list(adapters), gguf, engine)
    return columns, {c: conv for c in columns}, notes, "chat"


def _one_message_as_list(messages: Any) -> Any:
    """``{"role": "user", "content": "hi"}`` is one message, not per-column histories: the conversation ``[it]``.

    A dict mixing message keys with other keys is neither, and is refused rather than guessed.
    """
    if not isinstance(messages, Mapping) or not {"role", "content"} & set(messages):
        return messages
    extra = [str(k) for k in messages if k not in ("role", "content")]
    if extra:
        raise QloraError(f"the messages dict has the message keys 'role'/'content' and also {', '.join(map(repr, extra))}"
                         ", so it is neither one message nor one conversation per column.", where="messages",
                         hint=f"Pass one conversation as a list, e.g. {EXAMPLE}, or per-column histories as "
                              '{"base": [...], "<adapter>": [...]}.')
    return [dict(messages)]


def _adapter_list(adapters: Any) -> list[str]:
    if adapters is None:
        return []
    if isinstance(adapters, str):
        return [a.strip() for a in adapters.split(",") if a.strip()]
    if isinstance(adapters, (list, tuple)) and all(isinstance(a, str) for a in adapters):
        return list(adapters)
    raise QloraError(f"adapters must be a list of adapter names, got {type(adapters).__name__}.", where="adapters",
                     hint='Pass e.g. adapters=["default"] (the base is always shown).')


def chat(session, messages: Any, *, adapters: list[str] | None = None, on_event: Callable[[dict], None] | None = None,
         should_stop: Callable[[], bool] | None = None, **options: Any) -> ChatResult:
    """Reply to ``messages`` from the base and each adapter (default: every trained one), token by token together.

    ``messages``: a list of ``{"role", "content"}`` dicts (every column answers the same conversation) or a dict
    ``{column: messages}`` (each its own). ``options`` are the decoding options (``max_new_tokens``, ``sample``,
    ``temperature``, ``top_p``, ``seed``).
    """
    cfg = _options(options)
    columns, convs, notes, mode = _columns_and_messages(session, messages, adapters, cfg.gguf, cfg.engine)
    prompts: dict[str, Prompt] = {}
    for c in columns:
        where = "messages" if mode == "chat" else f"messages[{c!r}]"
        text = render_prompt(session.tokenizer, convs[c], where)
        prompts[c] = Prompt(convs[c][-1]["content"], text, None, True)
    return _run(session, columns, prompts, convs, cfg, notes, mode, on_event, should_stop)


def complete(session, text: str, *, adapters: list[str] | None = None, on_event: Callable[[dict], None] | None = None,
             should_stop: Callable[[], bool] | None = None, **options: Any) -> ChatResult:
    """Completion mode: ``text`` continued by every column, formatted as training formatted free text (no chat)."""
    cfg = _options(options)
    columns, notes = choose_columns(session, _adapter_list(adapters), cfg.gguf, cfg.engine)
    p = format_prompt(session, text, False)
    convs = {c: [{"role": "user", "content": text}] for c in columns}
    return _run(session, columns, {c: p for c in columns}, convs, cfg, notes, "completion", on_event, should_stop)


def _options(options: dict[str, Any]) -> GenerateConfig:
    for key in ("chat", "adapters"):
        if key in options:
            raise QloraError(f"{key!r} is not an option of a chat turn.", where=f"chat option {key!r}",
                             hint="Chat always uses the chat template; pick columns with adapters=[...].")
    return ChatOptions.from_options(options)


def _run(session, columns: list[str], prompts: dict[str, Prompt], convs: dict[str, list[dict[str, str]]],
         cfg: GenerateConfig, notes: list[str], mode: str, on_event: Callable[[dict], None] | None,
         should_stop: Callable[[], bool] | None) -> ChatResult:
    tok = session.tokenizer
    ids = {c: encode(session, prompts[c], cfg.max_new_tokens, "messages" if mode != "own" else f"messages[{c!r}]")
           for c in columns}

    def emit(kind: str, **data: Any) -> None:
        event = session.events.emit(kind, **data)
        if on_event is not None:
            on_event(event)

    opts = {k: v for k, v in cfg.to_dict().items() if k not in ("chat", "adapters")}
    formatted = {c: prompts[c].formatted for c in columns}
    emit("chat_begin", columns=list(columns), prompts=formatted, messages=convs, options=opts, notes=list(notes),
         mode=mode)
    shown: dict[str, str] = dict.fromkeys(columns, "")

    def on_token(column: str, out: list[int]) -> None:
        text = tok.decode(out, skip_special_tokens=True)
        delta = ""
        if not text.endswith("\ufffd"):  # a multi-byte character waits for the token that completes it
            delta = text[len(shown[column]):] if text.startswith(shown[column]) else text
            shown[column] = text
        emit("chat_token", column=column, text=shown[column], delta=delta, ids=list(out), n_tokens=len(out))

    with evaluating(session.model) as state:
        outputs = generate_together(session, ids, generate_kwargs(session, cfg), cfg.seed, state, on_token,
                                    should_stop)
    base_ids = outputs[BASE][0] if BASE in outputs else None
    files = set(attached(session))
    first = next((c for c in columns if c != BASE and c not in files), None) or next(
        (c for c in columns if c != BASE), None)
    cells: dict[str, dict[str, Any]] = {}
    for c in columns:
        out, seconds = outputs[c]
        other = (outputs[first][0] if first else out) if c == BASE else (base_ids if base_ids is not None else out)
        cells[c] = {"text": tok.decode(out, skip_special_tokens=True), "ids": out, "tokens": token_pieces(tok, out),
                    "diff": diff_mask(out, other), "n_tokens": len(out), "prompt_tokens": len(ids[c]),
                    "seconds": seconds, "tokens_per_s": len(out) / seconds if seconds > 0 else 0.0,
                    "changed": c != BASE and base_ids is not None and out != base_ids,
                    "source": BASE if c == BASE else "gguf" if c in files else "adapter"}
        emit("chat_column", column=c, cell=cells[c])
    result = ChatResult(list(columns), {c: cells[c]["text"] for c in columns}, formatted, convs, cells, opts,
                        list(notes), mode)
    emit("chat_end", result=result.to_event())
    return result
