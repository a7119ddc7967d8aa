"""Prompts for generation, formatted the way training saw them, and checked against the context window.

Held-out rows go through the training template; free text through the training
template or the chat template (see :mod:`qlora_nb.data.template`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, NamedTuple

from ...errors import QloraError


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
    from ...data.template import Template, chat_prompt, free_text_prompt, row_prompt

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
            raise QloraError("this model's tokenizer has no chat template.", where="generation option 'chat'",
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
