"""Read training data from files, the hub or the notebook into rows, keeping every field's text as written.

Policy on types (the issue: "no type inference may change it"):

* JSON / JSONL are parsed here, line by line, never by ``datasets`` (whose
  schema inference turns ``"007"`` columns into ints and unifies types across
  rows). Numbers are kept as their *original literal text* (``1.50`` stays
  ``"1.50"``, ``1e5`` stays ``"1e5"``) through ``json``'s ``parse_int`` /
  ``parse_float`` hooks, and ``true``/``false`` become ``"true"``/``"false"``,
  exactly the characters in the file. ``null`` is kept as ``None`` and refused
  by validation if a template field uses it.
* CSV / TSV are read with the ``csv`` module: every cell is the file's text
  (no NA or date parsing), with the physical line each record starts on.
* Parquet, hub datasets, DataFrames and lists of dicts carry real types; a
  non-text value in a field the template uses is refused by validation (we
  cannot know what text the user meant for a float or a timestamp).

Every row carries where it came from (``file, line N`` or ``row N``) so
validation errors name the first bad row.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import QloraError
from ..fileio import path_kind
from ..quiet import hub_offline, quiet_libraries
from .integrity import (
    DuplicateKey,
    allow_long_cells,
    check_swallowed_rows,
    check_unique_columns,
    duplicate_key_error,
    unique_pairs,
)

WHERE = "train option 'data'"
FILE_SUFFIXES = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv",
                 ".parquet": "parquet", ".pq": "parquet"}


@dataclass
class RawData:
    """Rows as loaded, each with the place it came from, plus an optional explicit held-out split."""

    rows: list[dict[str, Any]]
    where: list[str]
    source: str
    val_rows: list[dict[str, Any]] | None = None
    val_where: list[str] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        """Every column seen in any row, in first-seen order."""
        seen: dict[str, None] = {}
        for r in self.rows:
            for k in r:
                seen.setdefault(str(k), None)
        return list(seen)


def load_data(data: Any) -> RawData:
    """Rows from a path, ``"demo"``, a hub name, a list of dicts or a pandas DataFrame."""
    if isinstance(data, RawData):
        return data
    if isinstance(data, (str, Path)):
        text = str(data).strip()
        if text == "demo":
            return load_demo()
        path = Path(text).expanduser()
        kind = path_kind(path)
        if kind is None:
            return load_file(path)
        if kind != "missing":  # a folder, FIFO or link loop is there: say what it is, not "no data file"
            inside = ""
            if kind == "a folder":
                try:
                    found = sorted(p.name for p in path.iterdir() if p.suffix.lower() in FILE_SUFFIXES)[:5]
                except OSError:
                    found = []
                inside = f" (data files in it: {', '.join(found)})" if found else ""
            raise QloraError(f"{text!r} is {kind}, not a data file{inside}.", where=WHERE,
                             hint="Give the path of a .json/.jsonl/.csv/.tsv/.parquet file itself.")
        if path.suffix.lower() in FILE_SUFFIXES or text.startswith((".", "/", "~")):
            raise QloraError(f"no data file {text!r}.", where=WHERE,
                             hint=f"Give an existing .json/.jsonl/.csv/.tsv/.parquet file (the current folder is "
                                  f"{Path.cwd()}), 'demo', a hub dataset name or a $variable.")
        return load_hub(text)
    if _is_dataframe(data):
        return from_dataframe(data)
    if isinstance(data, Mapping):
        raise QloraError("data is a single mapping, not a list of rows.", where=WHERE,
                         hint="Pass a list of dicts (one per example) or a pandas DataFrame.")
    if isinstance(data, Sequence) and not isinstance(data, (bytes, bytearray)):
        return from_records(list(data), "the list")
    if type(data).__name__ in ("Dataset", "IterableDataset") and hasattr(data, "features"):
        return from_records([dict(r) for r in data], "the dataset")
    raise QloraError(f"cannot read data of type {type(data).__name__}.", where=WHERE,
                     hint="Use a file path, 'demo', a hub dataset name, a list of dicts or a pandas DataFrame.")


def load_demo() -> RawData:
    """The shipped demo task (see :mod:`qlora_nb.data.demo`), with its own held-out split."""
    from .demo import DEMO_DIR

    train = load_file(DEMO_DIR / "train.jsonl")
    val = load_file(DEMO_DIR / "val.jsonl")
    return RawData(train.rows, train.where, "demo", val_rows=val.rows, val_where=val.where)


def load_file(path: Path) -> RawData:
    kind = FILE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise QloraError(f"{path.name!r} has an unsupported extension {path.suffix!r}.", where=WHERE,
                         hint="Accepted: " + ", ".join(sorted(FILE_SUFFIXES)) + ".")
    if kind == "parquet":
        return load_parquet(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise QloraError(f"{path.name} is not UTF-8 text (byte {exc.start}).", where=WHERE,
                         hint="Save the file as UTF-8.") from None
    except OSError as exc:  # permissions, a vanished network share...
        raise QloraError(f"{path.name} could not be read ({exc.strerror or type(exc).__name__}).", where=WHERE,
                         hint=f"Check that {path} is readable by this kernel's user.") from None
    if kind == "jsonl":
        return parse_jsonl(text, path.name)
    if kind == "json":
        return parse_json(text, path.name)
    return parse_csv(text, path.name, delimiter="\t" if kind == "tsv" else ",")


def _json_loads(text: str):
    """``json.loads`` that keeps numbers as the text they were written as and refuses repeated keys."""
    return json.loads(text, parse_int=str, parse_float=str, parse_constant=str, object_pairs_hook=unique_pairs)


def _literal_bools(value: Any) -> Any:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dict):
        return {k: _literal_bools(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_literal_bools(v) for v in value]
    return value


def _json_error(name: str, line: int, exc: json.JSONDecodeError) -> QloraError:
    return QloraError(f"{name}, line {line}: not valid JSON ({exc.msg}, column {exc.colno}).", where=WHERE,
                      hint="Each line of a .jsonl file must be one JSON object.")


def _object_row(obj: Any, loc: str, hint: str) -> dict:
    """One example decoded from JSON: it must be an object; see :func:`_literal_bools` for its booleans."""
    if not isinstance(obj, dict):
        raise QloraError(f"{loc}: expected a JSON object, got {_json_kind(obj)}.", where=WHERE, hint=hint)
    return _literal_bools(obj)


# A record ends only at CR, LF or CRLF: where ``csv`` (on a file opened with ``newline=""``) and JSON
# (which forbids raw CR/LF inside strings) end one. ``str.splitlines`` also breaks on U+2028/U+2029,
# U+0085, form feed, vertical tab and the separators \x1c-\x1e: characters a cell or a JSON
# string may hold (issue 25, class 1).
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def physical_lines(text: str, keepends: bool = False) -> list[str]:
    """``text`` split at CR, LF and CRLF only (``str.splitlines`` splits at ten more characters)."""
    lines = _LINE.findall(text)
    if keepends:
        return lines
    return [ln.rstrip("\r\n") for ln in lines]


def parse_jsonl(text: str, name: str) -> RawData:
    rows, where = [], []
    for i, line in enumerate(physical_lines(text), start=1):
        if not line.strip():
            continue
        try:
            obj = _json_loads(line)
        except json.JSONDecodeError as exc:
            raise _json_error(name, i, exc) from None
        except DuplicateKey as dup:
            raise duplicate_key_error(f"{name}, line {i}", dup.key) from None
        loc = f"{name}, line {i}"
        rows.append(_object_row(obj, loc, 'Write one object per line, e.g. {"instruction": "...", "output": "..."}.'))
        where.append(loc)
    return RawData(rows, where, name)


def parse_json(text: str, name: str) -> RawData:
    """A JSON array of objects (line numbers kept), an object holding one such array, or JSON Lines."""
    decoder = json.JSONDecoder(parse_int=str, parse_float=str, parse_constant=str, object_pairs_hook=unique_pairs)
    idx = _skip_ws(text, 0)
    if idx < len(text) and text[idx] == "[":
        rows, where = [], []
        idx = _skip_ws(text, idx + 1)
        k = 0
        while idx < len(text) and text[idx] != "]":
            line = text.count("\n", 0, idx) + 1
            try:
                obj, idx = decoder.raw_decode(text, idx)
            except json.JSONDecodeError as exc:
                raise _json_error(name, exc.lineno, exc) from None
            except DuplicateKey as dup:
                raise duplicate_key_error(f"{name}, line {line} (row {k + 1})", dup.key) from None
            k += 1
            loc = f"{name}, line {line} (row {k})"
            rows.append(_object_row(obj, loc, "The file must be a list of objects, one per example."))
            where.append(loc)
            idx = _skip_ws(text, idx)
            if idx < len(text) and text[idx] == ",":
                idx = _skip_ws(text, idx + 1)
        if idx >= len(text):
            raise QloraError(f"{name}: the JSON array is not closed.", where=WHERE, hint="End the file with ].")
        return RawData(rows, where, name)
    try:
        obj = decoder.decode(text)
    except DuplicateKey as dup:
        raise duplicate_key_error(name, dup.key) from None
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # JSON Lines saved as .json
            return parse_jsonl(text, name)
        raise _json_error(name, exc.lineno, exc) from None
    if isinstance(obj, dict):
        lists = [(k, v) for k, v in obj.items() if isinstance(v, list)]
        if len(lists) == 1:
            key, items = lists[0]
            return from_records([_literal_bools(r) for r in items], f"{name} [{key!r}]")
        if obj and not lists:
            return RawData([_literal_bools(obj)], [f"{name}, row 1"], name)
    raise QloraError(f"{name}: expected a list of objects, got {_json_kind(obj)}.", where=WHERE,
                     hint="Write a JSON array of objects, or JSON Lines (one object per line).")


def _skip_ws(text: str, idx: int) -> int:
    while idx < len(text) and text[idx] in " \t\r\n":
        idx += 1
    return idx


def _json_kind(obj: Any) -> str:
    return {list: "an array", str: "a string or number", type(None): "null", dict: "an object"}.get(
        type(obj), type(obj).__name__)


def parse_csv(text: str, name: str, delimiter: str = ",") -> RawData:
    """Every cell as the file's text; each record located by the line it starts on.

    The parse is ``strict`` (a quote must close before a delimiter or line end,
    and the file must not end inside a quoted cell), and every record that
    spans several lines is checked by :func:`~.integrity.check_swallowed_rows`,
    so an unbalanced quote is an error naming its line, never fewer rows.
    """
    allow_long_cells()
    lines = physical_lines(text, keepends=True)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return RawData([], [], name)
    except csv.Error as exc:
        raise QloraError(f"{name}, line 1: cannot read the header ({exc}).", where=WHERE,
                         hint="Close every quoted cell.") from None
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise QloraError(f"{name}, line 1: duplicate column name(s) {', '.join(map(repr, dupes))}.", where=WHERE,
                         hint="Give every column a distinct name.")
    rows, where = [], []
    start = reader.line_num + 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise QloraError(f"{name}, line {start}: a quoted cell starting on this line is not closed properly "
                             f"({exc}).", where=WHERE,
                             hint='Close every quoted cell; a quote inside a quoted cell is written "".') from None
        loc = f"{name}, line {start}"
        if reader.line_num > start:
            check_swallowed_rows(name, start, lines[start - 1:reader.line_num], len(header), delimiter)
        start = reader.line_num + 1
        if not record or all(c == "" for c in record) and len(record) <= 1:
            continue
        if len(record) > len(header):
            raise QloraError(f"{loc}: {len(record)} cells but the header names {len(header)} columns.",
                             where=WHERE, hint="Quote cells that contain the delimiter.")
        rows.append(dict(zip(header, record, strict=False)))  # short records: missing cells stay missing
        where.append(loc)
    return RawData(rows, where, name)


def load_parquet(path: Path) -> RawData:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(str(path)).names
    except Exception as exc:
        raise QloraError(f"{path.name} could not be read as parquet ({type(exc).__name__}: {exc}).",
                         where=WHERE) from None
    check_unique_columns(names, path.name)  # before reading: pyarrow's own error would not name the column
    try:
        table = pq.read_table(str(path))
    except Exception as exc:
        raise QloraError(f"{path.name} could not be read as parquet ({type(exc).__name__}: {exc}).",
                         where=WHERE) from None
    return from_records(table.to_pylist(), path.name)


def from_records(records: list[Any], source: str) -> RawData:
    rows, where = [], []
    for i, r in enumerate(records, start=1):
        loc = f"{source}, row {i}"
        if not isinstance(r, Mapping):
            raise QloraError(f"{loc}: expected a dict of fields, got {type(r).__name__}.", where=WHERE,
                             hint="Each example must be a dict such as {'instruction': ..., 'output': ...}.")
        rows.append(dict(r))
        where.append(loc)
    return RawData(rows, where, source)


def _is_dataframe(obj: Any) -> bool:
    return type(obj).__name__ == "DataFrame" and hasattr(obj, "to_dict") and hasattr(obj, "columns")


def from_dataframe(df: Any) -> RawData:
    """A DataFrame's rows with their index labels; missing values (NaN/None) stay missing (None)."""
    import pandas as pd

    check_unique_columns(df.columns, "the DataFrame")  # to_dict would keep one of two equal columns
    records = df.to_dict(orient="records")
    rows, where = [], []
    for label, r in zip(df.index, records, strict=True):
        rows.append({str(k): (None if _is_missing(v, pd) else v) for k, v in r.items()})
        where.append(f"the DataFrame, row {label!r}")
    return RawData(rows, where, "the DataFrame")


def _is_missing(v: Any, pd) -> bool:
    try:
        return bool(pd.isna(v)) if not isinstance(v, (list, dict, tuple)) else False
    except (TypeError, ValueError):
        return False


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def load_hub(name: str) -> RawData:
    """A hub dataset's train split (needs network access; the name is ``owner/dataset`` or ``dataset``).

    Text that cannot be a hub id (spaces, a path) and any name while offline
    fail at once with one line: ``datasets`` would otherwise retry for a minute
    and print a page of connection warnings first.
    """
    local_hint = (f"Give an existing .json/.jsonl/.csv/.tsv/.parquet file (the current folder is {Path.cwd()}), "
                  "'demo', a hub dataset name or a $variable.")
    if not _HUB_ID.fullmatch(name):
        raise QloraError(f"no data file {name!r}, and it is not a hub dataset name either.", where=WHERE,
                         hint=local_hint)
    if hub_offline(datasets=True):
        raise QloraError(f"{name!r} is not a local file, and hub datasets cannot be downloaded offline "
                         "(HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set).", where=WHERE, hint=local_hint)
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise QloraError("the datasets package is not installed.", where=WHERE) from None
    try:
        with quiet_libraries(hub=True):
            ds = datasets.load_dataset(name, split="train")
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise QloraError(f"{name!r} is not a local file and could not be loaded from the hub ({first}).",
                         where=WHERE, hint="Check the path (relative to the notebook's folder) or the dataset "
                                           "name and your network access.") from None
    return from_records([dict(r) for r in ds], f"hub dataset {name}")
