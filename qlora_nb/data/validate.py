"""Check rows against the template before any training starts, naming the first bad row.

Training that fails at step 300 on row 4,812 wastes the user's time; so does a
template field that silently renders as an empty string. Every check here runs
over all rows up front and raises :class:`QloraError` with the row's place
(``data.jsonl, line 7``), the field and what was found instead of text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import QloraError, close_matches
from .load import WHERE, RawData
from .template import Template, chat_split, default_template

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class TextRows:
    """Validated rows, each a dict of str, ready to render with ``template``."""

    rows: list[dict[str, str]]
    val_rows: list[dict[str, str]] | None
    template: Template
    chat_format: bool
    source: str


def _type_name(value: Any) -> str:
    if value is None:
        return "null/missing (None)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({type(value).__name__} {value!r})"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object/dict"
    return f"a {type(value).__module__}.{type(value).__name__}" if type(value).__module__ != "builtins" \
        else f"a {type(value).__name__}"


def validate(raw: RawData, template: str | Template | None, tokenizer: Any = None) -> TextRows:
    """Rows as text, checked against the template (or the chat format), train and held-out alike."""
    if not raw.rows:
        raise QloraError(f"{raw.source}: the data has no rows.", where=WHERE,
                         hint="Give at least a few examples (a file with one example per line/row).")
    columns = raw.columns
    if template is None:
        tpl = default_template(columns)
        chat = tpl is None and "messages" in columns
        if tpl is None and not chat:
            raise QloraError(f"{raw.source}: no template given and the columns ({', '.join(columns)}) are not a "
                             "known layout.", where="train option 'template'",
                             hint="Add e.g. `template: \"### Question: {question}\\n### Answer: {output}\"`, or use "
                                  "columns instruction/input/output, prompt/completion, or chat `messages`.")
    else:
        tpl = template if isinstance(template, Template) else Template.parse(template)
        chat = False
    if chat:
        if tokenizer is None:
            raise QloraError("chat `messages` rows need the model's tokenizer.", where=WHERE)
        rows = [_chat_row(r, w, tokenizer) for r, w in zip(raw.rows, raw.where, strict=True)]
        val = None
        if raw.val_rows is not None:
            val = [_chat_row(r, w, tokenizer) for r, w in zip(raw.val_rows, raw.val_where, strict=True)]
        replies = [{"output": r["messages"][-1]["content"]} for r in raw.rows]  # the reply, without end tokens
        _refuse_empty_completions(replies, Template.parse("{output}"), raw.source)
        return TextRows(rows, val, Template.parse("{prompt}{output}"), True, raw.source)

    missing = [f for f in dict.fromkeys(tpl.fields) if f not in columns]
    if missing:
        parts = []
        for f in missing:
            near = close_matches(f, columns)
            parts.append(f"{{{f}}}" + (f" (did you mean {' or '.join(map(repr, near))}?)" if near else ""))
        raise QloraError(f"{raw.source}: template field(s) {', '.join(parts)} match no column.",
                         where="train option 'template'",
                         hint=f"The data's columns are: {', '.join(columns)}. Rename the field or the column.")
    rows = [_text_row(r, w, tpl) for r, w in zip(raw.rows, raw.where, strict=True)]
    val = None
    if raw.val_rows is not None:
        val = [_text_row(r, w, tpl) for r, w in zip(raw.val_rows, raw.val_where, strict=True)]
    _refuse_empty_completions(rows, tpl, raw.source)
    return TextRows(rows, val, tpl, False, raw.source)


def _refuse_empty_completions(rows: list[dict[str, str]], tpl: Template, source: str) -> None:
    """Every completion empty: training would only learn to stop, and report "done" (issue 15, class 5)."""
    if rows and not any(str(r.get(tpl.output, "")).strip() for r in rows):
        raise QloraError(f"{source}: every row's completion (the text after the prompt that the model learns) is "
                         f"empty, so there is nothing to learn.", where=WHERE,
                         hint="Check that the output column holds the answers (and is the one the template ends "
                              "with), or that each conversation ends with a non-empty assistant turn.")


def _text_row(row: dict[str, Any], where: str, tpl: Template) -> dict[str, str]:
    out = {}
    for f in dict.fromkeys(tpl.fields):
        if f not in row:
            raise QloraError(f"{where}: field {f!r} is missing.", where=WHERE,
                             hint=f"Every row needs the template's fields: {', '.join(dict.fromkeys(tpl.fields))}.")
        value = row[f]
        if value is None and where.startswith("the DataFrame"):
            raise QloraError(f"{where}: field {f!r} is null/missing (None), not text.", where=WHERE,
                             hint="pandas reads empty cells and text such as 'NA', 'null' or 'None' as NaN: read "
                                  "the file with pd.read_csv(path, dtype=str, keep_default_na=False) to keep the "
                                  "text as written, or fill the gaps with .fillna('').")
        if not isinstance(value, str):
            raise QloraError(f"{where}: field {f!r} is {_type_name(value)}, not text.", where=WHERE,
                             hint="Fields reach the prompt exactly as written, so they must be text: write it as a "
                                  "string in the file, or convert the column with .astype(str) / read the CSV "
                                  "with dtype=str.")
        out[f] = value
    return out


def _chat_row(row: dict[str, Any], where: str, tokenizer: Any) -> dict[str, str]:
    msgs = row.get("messages")
    if msgs is None:
        raise QloraError(f"{where}: field 'messages' is missing.", where=WHERE,
                         hint="Chat rows need messages: a list of {role, content} turns ending with the assistant.")
    if not isinstance(msgs, list) or not msgs:
        raise QloraError(f"{where}: field 'messages' is {_type_name(msgs) if msgs != [] else 'an empty list'}, "
                         "not a list of turns.", where=WHERE,
                         hint='Write "messages": [{"role": "user", "content": "..."}, '
                              '{"role": "assistant", "content": "..."}].')
    clean = []
    for i, m in enumerate(msgs, start=1):
        if not isinstance(m, dict):
            raise QloraError(f"{where}: message {i} is {_type_name(m)}, not a {{role, content}} object.", where=WHERE)
        for key in ("role", "content"):
            if key not in m:
                raise QloraError(f"{where}: message {i} has no {key!r}.", where=WHERE,
                                 hint="Every turn needs a role and a content.")
            if not isinstance(m[key], str):
                raise QloraError(f"{where}: message {i} {key!r} is {_type_name(m[key])}, not text.", where=WHERE)
        if m["role"] not in ROLES:
            raise QloraError(f"{where}: message {i} has role {m['role']!r}.", where=WHERE,
                             hint=f"Accepted roles: {', '.join(ROLES)}.")
        clean.append({"role": m["role"], "content": m["content"]})
    if clean[-1]["role"] != "assistant":
        raise QloraError(f"{where}: the last message is from {clean[-1]['role']!r}, not 'assistant'.", where=WHERE,
                         hint="The last turn is the reply the model learns; end each conversation with it.")
    if len(clean) < 2:
        raise QloraError(f"{where}: the conversation has only the assistant reply.", where=WHERE,
                         hint="Add the user turn the reply answers.")
    return chat_split(tokenizer, clean)
