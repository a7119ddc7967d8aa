"""Issue 25, class 1: records end only where ``csv`` and ``json`` end them (CR, LF, CRLF).

``str.splitlines`` also breaks on U+2028/U+2029, U+0085, form feed, vertical tab
and U+001C-U+001E; a cell or a JSON string holding one of them must stay one
record, and every later line number must stay right.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qlora_nb.data.load import parse_csv, parse_jsonl, physical_lines
from qlora_nb.errors import QloraError

# Every character str.splitlines breaks on that is not CR or LF.
NOT_LINE_ENDS = ["\u2028", "\u2029", "\x85", "\x0c", "\x0b", "\x1c", "\x1d", "\x1e"]
assert all(len(("a" + c + "b").splitlines()) == 2 for c in NOT_LINE_ENDS)


@pytest.mark.parametrize("sep", NOT_LINE_ENDS, ids=[f"U+{ord(c):04X}" for c in NOT_LINE_ENDS])
@pytest.mark.parametrize("quoted", [False, True])
def test_csv_cell_keeps_separator(sep, quoted):
    cell = f"4{sep}(explained)"
    body = f'"{cell}"' if quoted else cell
    text = f"prompt,completion\n2+2?,{body}\nsky?,blue\n"
    data = parse_csv(text, "t.csv")
    assert [r["completion"] for r in data.rows] == [cell, "blue"]
    assert data.where == ["t.csv, line 2", "t.csv, line 3"]


@pytest.mark.parametrize("sep", NOT_LINE_ENDS, ids=[f"U+{ord(c):04X}" for c in NOT_LINE_ENDS])
def test_jsonl_string_keeps_separator(sep):
    text = json.dumps({"prompt": f"a{sep}b", "completion": "c"}, ensure_ascii=False) + "\n" + '{"prompt": "x"\n'
    with pytest.raises(QloraError, match=r"line 2: not valid JSON"):  # the bad line is still line 2
        parse_jsonl(text, "t.jsonl")
    data = parse_jsonl(text.split("\n")[0] + "\r\n" + '{"prompt": "y", "completion": "z"}', "t.jsonl")
    assert data.rows[0]["prompt"] == f"a{sep}b"
    assert data.where == ["t.jsonl, line 1", "t.jsonl, line 2"]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_line_numbers_after_a_quoted_form_feed(newline):
    text = newline.join(["prompt,completion", '"a\x0cb",c', "d,e", 'f,"g'])
    with pytest.raises(QloraError, match=r"t.csv, line 4"):
        parse_csv(text, "t.csv")


def test_real_line_ends_still_split():
    assert physical_lines("a\nb\r\nc\rd") == ["a", "b", "c", "d"]
    assert physical_lines("a\n\nb\n") == ["a", "", "b"]
    assert physical_lines("") == [] and physical_lines("x") == ["x"]
    assert "".join(physical_lines("a\r\nb\u2028c\r", keepends=True)) == "a\r\nb\u2028c\r"


# ----------------------------------------------------------------------------- fuzzing the splitter
_CELL = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


@settings(max_examples=300, deadline=None, database=None)
@given(rows=st.lists(st.tuples(_CELL, _CELL), min_size=1, max_size=6),
       terminator=st.sampled_from(["\n", "\r\n"]))
def test_csv_round_trip_any_text(rows, terminator):
    """What ``csv`` writes, ``parse_csv`` reads back cell for cell (cells the swallowed-row guard refuses aside)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=terminator, quoting=csv.QUOTE_ALL)
    writer.writerow(["prompt", "completion"])
    writer.writerows(rows)
    try:
        data = parse_csv(buf.getvalue(), "f.csv")
    except QloraError as exc:  # a cell holding a line that looks like a row of its own is refused, never lost
        assert "look like rows" in str(exc)
        return
    assert data.rows == [{"prompt": a, "completion": b} for a, b in rows]


@settings(max_examples=300, deadline=None, database=None)
@given(values=st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",))), min_size=1, max_size=6),
       terminator=st.sampled_from(["\n", "\r\n"]))
def test_jsonl_round_trip_any_text(values, terminator):
    """One ``json.dumps`` per line (unescaped non-ASCII), read back as exactly those rows and line numbers."""
    text = terminator.join(json.dumps({"prompt": v}, ensure_ascii=False) for v in values)
    data = parse_jsonl(text, "f.jsonl")
    assert [r["prompt"] for r in data.rows] == values
    assert data.where == [f"f.jsonl, line {i}" for i in range(1, len(values) + 1)]
