"""Malformed files are errors, never silently different data (issue 15, class 1).

Parsers are forgiving by design: ``json`` keeps the last of two equal keys,
``csv`` lets an unclosed quote swallow the rest of the file into one cell,
``DataFrame.to_dict`` keeps one of two equal column names, PyYAML keeps the
last repeated key. Each of these turns a typo into *different* training data
with no message. The checks here make every format refuse them and name the
key or the line, so what trains is what the file says.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any

from ..errors import QloraError

WHERE = "train option 'data'"


class DuplicateKey(ValueError):
    """Raised from a JSON ``object_pairs_hook``; the caller knows the line and turns it into a QloraError."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for ``json``: a dict, or :class:`DuplicateKey` for a key written twice."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(key)
        out[key] = value
    return out


def duplicate_key_error(loc: str, key: str) -> QloraError:
    return QloraError(f"{loc}: the key {key!r} appears twice in one object; JSON readers keep only the last one, "
                      "so the first value would be lost silently.", where=WHERE,
                      hint="Remove or rename one of them.")


def check_unique_columns(names: Iterable[Any], source: str) -> None:
    """Refuse a table (DataFrame, parquet) with two columns of the same name: one would be dropped."""
    seen: set[str] = set()
    dupes: list[str] = []
    for name in names:
        text = str(name)
        if text in seen and text not in dupes:
            dupes.append(text)
        seen.add(text)
    if dupes:
        raise QloraError(f"{source}: duplicate column name(s) {', '.join(map(repr, dupes))}; only one of each "
                         "would be kept.", where=WHERE, hint="Give every column a distinct name "
                                                             "(df.columns.duplicated() finds them).")


def allow_long_cells() -> None:
    """Lift ``csv``'s 128 KiB cell limit: a long document is data, not an error (cutoff_len truncates it).

    The limit used to be the only thing that caught an unclosed quote; the
    strict parse and :func:`check_swallowed_rows` do that job now, with the line.
    """
    limit = csv.field_size_limit()
    if limit < 2**31 - 1:
        csv.field_size_limit(2**31 - 1)


def looks_like_row(line: str, n_columns: int, delimiter: str) -> bool:
    """A physical line that, read on its own, is a complete unquoted record of the header's width."""
    if n_columns < 2 or '"' in line or not line.strip():
        return False
    return len(line.rstrip("\r\n").split(delimiter)) == n_columns


def check_swallowed_rows(name: str, start_line: int, lines: list[str], n_columns: int, delimiter: str) -> None:
    """A record that spans several lines must not hold lines that are rows of their own.

    This is the independent count the issue asks for: ``csv`` counted this
    record as one row, but counting the physical lines inside its quoted cell
    that have exactly the header's width (and no quote) gives how many rows an
    unbalanced quote may have swallowed. Any such line is refused with both
    line numbers; a genuine multi-line cell rarely has the header's exact width
    on every continuation line, and JSONL has no such ambiguity.
    """
    inner = lines[1:]
    swallowed = [start_line + 1 + i for i, ln in enumerate(inner) if looks_like_row(ln, n_columns, delimiter)]
    if swallowed:
        shown = ", ".join(map(str, swallowed[:5])) + (" …" if len(swallowed) > 5 else "")
        raise QloraError(f"{name}, line {start_line}: a quoted cell opened here runs to line "
                         f"{start_line + len(lines) - 1} and contains {len(swallowed)} line(s) that look like rows "
                         f"of their own (line {shown}); parsed as one row, they would silently be lost.",
                         where=WHERE, hint='Close the quote on its own line, write a literal quote inside a '
                                           'quoted cell as "", or save the data as JSONL.')
