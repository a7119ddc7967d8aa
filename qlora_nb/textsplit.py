"""How typed text becomes arguments: shell-like splitting, quote-aware lists and ``$name`` values.

Three rules a notebook user can predict (issue 15, class 4):

* A magic line splits like a shell line: quotes group words and are removed
  (``"my adapter"`` is the path ``my adapter``), but backslashes stay as typed,
  because Windows paths (``C:\\runs\\v1``) are far more common in a notebook
  than shell escapes. ``shlex`` does this with its escape character turned off.
* A list option written as text (``q_proj, v_proj`` or ``"a, b", c``) splits
  on commas *outside* quoted items. ``csv`` knows only one quote character and
  ``shlex`` treats an apostrophe inside a word (``what's``) as a quote, so a
  quote opens an item only at the item's start; the scanner is 20 lines.
* ``$name`` refers to a notebook variable only when it is the *whole* value and
  ``name`` is an identifier; ``$$`` at the start is a literal ``$``. Text such as
  ``costs $5`` or ``$x y`` is left exactly as written.
"""

from __future__ import annotations

import keyword
import shlex
from collections.abc import Mapping
from typing import Any

from .errors import QloraError

_MISSING = object()


def split_args(line: str, where: str = "arguments") -> list[str]:
    """Shell-like words: quotes group and are removed, backslashes are kept, ``#`` is text."""
    lex = shlex.shlex(line or "", posix=True)
    lex.whitespace_split = True
    lex.commenters = ""
    lex.escape = ""  # keep C:\path\to\file as typed
    try:
        return list(lex)
    except ValueError as exc:  # "No closing quotation"
        raise QloraError(f"could not split the arguments ({str(exc).lower()}).", where=where,
                         hint="Close every quote; a path with spaces goes in quotes: \"my adapter\".") from None


def split_list(text: str, where: str = "option") -> list[str]:
    """Comma-separated items; a comma inside a quoted item (``"a, b"``) does not split it."""
    items: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] in "\"'":
            quote, start = text[i], i
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise QloraError(f"the quoted item starting at character {start + 1} of {text!r} is not "
                                     "closed.", where=where, hint=f"Close it with {quote}.")
                if text[j] == quote:
                    if j + 1 < n and text[j + 1] == quote:  # a doubled quote is a literal quote
                        buf.append(quote)
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            item, i = "".join(buf), j + 1
            while i < n and text[i] in " \t":
                i += 1
            if i < n and text[i] != ",":
                raise QloraError(f"unexpected text after the quoted item {item!r} in {text!r}.", where=where,
                                 hint="Separate items with commas: \"a, b\", c.")
            items.append(item)
        else:
            j = text.find(",", i)
            j = n if j < 0 else j
            item = text[i:j].strip()
            if item:
                items.append(item)
            i = j
        i += 1  # past the comma
    return items


def variable_name(value: Any) -> str | None:
    """``name`` when ``value`` is exactly ``$name`` with ``name`` an identifier, else None."""
    if not isinstance(value, str) or not value.startswith("$") or value.startswith("$$"):
        return None
    name = value[1:]
    return name if name.isidentifier() and not keyword.iskeyword(name) else None


def interpolate(value: Any, namespace: Mapping[str, Any], where: str) -> Any:
    """The notebook variable for an exact ``$name``; ``$$text`` -> ``$text``; anything else unchanged."""
    if isinstance(value, str) and value.startswith("$$"):
        return value[1:]
    name = variable_name(value)
    if name is None:
        return value
    found = namespace.get(name, _MISSING)
    if found is _MISSING:
        raise QloraError(f"no variable named {name!r} in the notebook.", where=where,
                         hint=f"Define it in a cell above, or write $${name} for the literal text ${name}.")
    return found
