"""Prompt templates: a format string split at ``{output}`` into prompt and completion.

Everything before ``{output}`` is the prompt (masked from the loss when
``completion_only``), ``{output}`` plus any literal text after it is the
completion. Rendering is a plain join of the parsed pieces rather than
``str.format``, so a value containing ``{`` or ``}`` reaches the prompt exactly
as written, and format specs/conversions (``{x:>5}``, ``{x!r}``) are refused
because they would change the user's text.

Contract with the compare helper (``%qlora_compare``): after training,
``session.template`` is the :class:`Template` used and ``session.val_rows`` are
the held-out rows as dicts of str, so ``session.template.prompt(row)`` is
byte-for-byte the prompt seen in training. For chat ``messages`` data
(``session.chat_format`` is True) the rows are pre-rendered: the template is the
pass-through ``{prompt}{output}``, ``row["prompt"]`` is the chat-rendered
prompt (generation prompt included) and free text goes through
:func:`chat_prompt`. :func:`free_text_prompt` and :func:`row_prompt` encode
these rules so callers need not.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import QloraError

OUTPUT = "output"


@dataclass(frozen=True)
class Template:
    """A parsed format string. ``pieces`` is ``[(literal, field_or_None), ...]`` in order."""

    text: str
    pieces: tuple[tuple[str, str | None], ...]
    output: str = OUTPUT

    # ------------------------------------------------------------ building
    @classmethod
    def parse(cls, text: str, output: str = OUTPUT) -> Template:
        """Parse ``text``; errors name the template and what is accepted."""
        where = "train option 'template'"
        if not isinstance(text, str):
            raise QloraError(f"the template must be text, got {type(text).__name__}.", where=where,
                             hint='Write e.g. "### Instruction: {instruction}\\n### Response: {output}".')
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise QloraError(f"template {text!r} is not a valid format string ({exc}).", where=where,
                             hint="Write fields as {name}; write a literal brace as {{ or }}.") from None
        pieces: list[tuple[str, str | None]] = []
        for literal, name, spec, conv in parsed:
            if name is None:
                pieces.append((literal, None))
                continue
            if name == "" or name.isdigit():
                raise QloraError(f"template {text!r} has an unnamed field {{{name}}}.", where=where,
                                 hint="Name every field after a column, e.g. {instruction}.")
            if not name.isidentifier():
                raise QloraError(f"template {text!r} has field {{{name}}}, which is not a plain column name.",
                                 where=where, hint="Use {column} only: no attributes, indexes or spaces.")
            if spec or conv:
                raise QloraError(f"template {text!r} formats field {name!r} ({'!' + conv if conv else ''}"
                                 f"{':' + spec if spec else ''}).", where=where,
                                 hint="Fields are inserted exactly as written; write just {" + name + "}.")
            pieces.append((literal, name))
        names = [n for _, n in pieces if n is not None]
        if names.count(output) != 1:
            got = "has no" if output not in names else "has more than one"
            raise QloraError(f"template {text!r} {got} {{{output}}} field.", where=where,
                             hint=f"Everything before {{{output}}} is the prompt and {{{output}}} is the "
                                  "completion the model learns, so it must appear exactly once.")
        after = names[names.index(output) + 1:]
        if after:
            raise QloraError(f"template {text!r} has field(s) {', '.join(after)} after {{{output}}}.",
                             where=where, hint=f"Only literal text may follow {{{output}}}; move the fields "
                                               "into the prompt part.")
        return cls(text=text, pieces=tuple(pieces), output=output)

    # ------------------------------------------------------------- reading
    @property
    def fields(self) -> list[str]:
        """Field names in order of appearance (the output field included)."""
        return [n for _, n in self.pieces if n is not None]

    @property
    def prompt_fields(self) -> list[str]:
        return [n for n in self.fields if n != self.output]

    def _split(self) -> int:
        return next(i for i, (_, n) in enumerate(self.pieces) if n == self.output)

    def prompt(self, row: Mapping[str, str]) -> str:
        """The text before ``{output}``, with the row's fields inserted verbatim."""
        k = self._split()
        out = [lit + str(row[n]) for lit, n in self.pieces[:k]]
        out.append(self.pieces[k][0])
        return "".join(out)

    def completion(self, row: Mapping[str, str]) -> str:
        """``{output}`` and any literal text after it."""
        k = self._split()
        tail = [lit + (str(row[n]) if n is not None else "") for lit, n in self.pieces[k + 1:]]
        return str(row[self.output]) + "".join(tail)

    def render(self, row: Mapping[str, str]) -> str:
        return self.prompt(row) + self.completion(row)

    def prompt_from_text(self, text: str) -> str:
        """A prompt for free text: the first prompt field gets ``text``, the others stay empty."""
        fields = self.prompt_fields
        row = {n: "" for n in fields}
        if fields:
            row[fields[0]] = text
            return self.prompt(row)
        return text + self.prompt(row)  # a fixed prompt: the text goes in front of it

    def __str__(self) -> str:
        return self.text


PASSTHROUGH = "{prompt}{output}"
ALPACA = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{output}"
ALPACA_NO_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n{output}"


def default_template(columns: list[str]) -> Template | None:
    """The template used when none is given, from the columns present (None for chat rows).

    ``prompt``/``completion`` columns are joined as they are; ``instruction``/
    ``output`` (with optional ``input``) get the Alpaca layout; ``prompt``/
    ``output`` are joined as they are.
    """
    cols = set(columns)
    if "messages" in cols:
        return None
    if {"prompt", "completion"} <= cols:
        return Template.parse("{prompt}{completion}", output="completion")
    if {"instruction", "output"} <= cols:
        return Template.parse(ALPACA if "input" in cols else ALPACA_NO_INPUT)
    if {"prompt", "output"} <= cols:
        return Template.parse(PASSTHROUGH)
    return None


def chat_prompt(tokenizer: Any, text: str) -> str:
    """``text`` as one user turn in the tokenizer's chat template, ending with the assistant prompt."""
    return render_chat(tokenizer, [{"role": "user", "content": text}], add_generation_prompt=True)


def render_chat(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise QloraError("this model's tokenizer has no chat template, so 'messages' rows cannot be rendered.",
                         where="train option 'data'",
                         hint="Give a template such as \"{prompt}{output}\" and prompt/output columns instead.")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def chat_split(tokenizer: Any, messages: list[dict[str, str]]) -> dict[str, str]:
    """Split a conversation into the rendered prompt (all but the last, assistant, turn) and its reply.

    The completion is the rendered full conversation minus the rendered prompt,
    so the end-of-turn tokens the template adds after the reply are learned too.
    """
    full = render_chat(tokenizer, messages)
    prompt = render_chat(tokenizer, messages[:-1], add_generation_prompt=True)
    if full.startswith(prompt):
        return {"prompt": prompt, "output": full[len(prompt):]}
    # Templates that restyle earlier turns once a reply follows: fall back to the reply text itself.
    return {"prompt": prompt, "output": messages[-1]["content"]}


def row_prompt(session: Any, row: Mapping[str, str]) -> str:
    """A held-out row's prompt exactly as training rendered it."""
    template = getattr(session, "template", None)
    if isinstance(template, Template):
        return template.prompt(row)
    return str(row.get("prompt", ""))


def free_text_prompt(session: Any, text: str) -> str:
    """Free text as the model saw prompts in training: chat template, training template, or as is."""
    template = getattr(session, "template", None)
    if getattr(session, "chat_format", False) or not isinstance(template, Template):
        if getattr(session.tokenizer, "chat_template", None):
            return chat_prompt(session.tokenizer, text)
        return text
    return template.prompt_from_text(text)
