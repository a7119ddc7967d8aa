"""Issue 15, class 1 (and the data items of class 10): malformed files are errors, never different data."""

from __future__ import annotations

import json
import logging

import pytest

from qlora_nb.data.load import load_data, parse_csv, parse_json, parse_jsonl
from qlora_nb.data.validate import validate
from qlora_nb.errors import QloraError
from qlora_nb.magics.base import parse_yaml_body

H = "prompt,completion\n"

# CSV/TSV text that must be refused, with the fragments the error must name.
BAD_CSV = [
    ("unclosed-to-eof", H + '"never closed,x\nb,c\nd,e\n', ["line 2", "not closed"]),
    ("unclosed-then-quote", H + 'a,"unc\nb,c\nd,"e"\n', ["line 2", "not closed"]),
    ("swallow-closed-later", H + 'a,"unc\nb,c\nd,e"\n', ["line 2", "line 3", "look like rows"]),
    ("swallow-many", H + 'a,"x\n' + "".join(f"r{i},c{i}\n" for i in range(8)) + 'z,y"\n', ["line 2", "8 line(s)"]),
    ("text-after-quote", H + '"a" b,c\n', ["line 2", "not closed"]),
    ("unclosed-last-line", H + 'a,b\nc,"d\n', ["line 3", "not closed"]),
    ("header-unclosed", '"prompt,completion\na,b\n', ["line 1"]),
    ("too-many-cells", H + "a,b,c\n", ["line 2", "3 cells"]),
    ("dup-header", "prompt,prompt\na,b\n", ["line 1", "duplicate", "'prompt'"]),
    ("dup-header-spaces", "prompt, prompt\na,b\n", ["duplicate", "'prompt'"]),
]


@pytest.mark.parametrize("name,text,expect", BAD_CSV, ids=[c[0] for c in BAD_CSV])
def test_malformed_csv_is_refused_naming_the_line(name, text, expect):
    with pytest.raises(QloraError) as info:
        parse_csv(text, "f.csv")
    for e in expect:
        assert e in str(info.value), (e, str(info.value))


def test_tsv_uses_the_same_checks():
    with pytest.raises(QloraError, match="look like rows"):
        parse_csv('prompt\tcompletion\na\t"unc\nb\tc\nd\te"\n', "f.tsv", delimiter="\t")


GOOD_CSV = [
    ("plain", H + "a,b\nc,d\n", [("a", "b"), ("c", "d")]),
    ("quoted-comma", H + '"a, b",c\n', [("a, b", "c")]),
    ("escaped-quote", H + '"say ""hi""",x\n', [('say "hi"', "x")]),
    ("literal-quote-unquoted-cell", H + 'say "hi" now,x\n5" screen,y\n', [('say "hi" now', "x"), ('5" screen', "y")]),
    ("multiline-prose", H + 'q,"first line\nsecond line\nthird"\nr,s\n', [("q", "first line\nsecond line\nthird"),
                                                                            ("r", "s")]),
    ("multiline-code", H + 'q,"def f(x):\n    return x"\n', [("q", "def f(x):\n    return x")]),
    ("crlf", "prompt,completion\r\na,b\r\nc,d\r\n", [("a", "b"), ("c", "d")]),
    ("blank-lines", H + "a,b\n\nc,d\n", [("a", "b"), ("c", "d")]),
]


@pytest.mark.parametrize("name,text,rows", GOOD_CSV, ids=[c[0] for c in GOOD_CSV])
def test_well_formed_csv_parses_to_the_same_rows(name, text, rows):
    raw = parse_csv(text, "f.csv")
    assert [(r["prompt"], r["completion"]) for r in raw.rows] == rows


def test_a_200k_character_cell_is_data_not_an_error(tmp_path):
    long = "word " * 40_000
    path = tmp_path / "long.csv"
    path.write_text(H + f'"{long}",short\nq,a\n', encoding="utf-8")
    raw = load_data(str(path))
    assert len(raw.rows) == 2 and raw.rows[0]["prompt"] == long and len(long) == 200_000


DUP_JSON = [
    ("jsonl", '{"prompt": "a", "completion": "b"}\n{"prompt": "a", "prompt": "c", "completion": "d"}\n',
     ["line 2", "'prompt'", "twice"]),
    ("jsonl-nested", '{"prompt": "a", "completion": "b", "meta": {"k": 1, "k": 2}}\n', ["line 1", "'k'"]),
    ("json-array", '[\n{"prompt": "a", "completion": "b"},\n{"completion": "x", "completion": "y", "prompt": "p"}\n]',
     ["line 3", "row 2", "'completion'"]),
    ("json-object", '{"prompt": "a", "prompt": "b", "completion": "c"}', ["'prompt'", "twice"]),
    ("json-wrapped", '{"data": [{"prompt": "a", "completion": "b", "completion": "c"}]}', ["'completion'"]),
    ("json-as-lines", '{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": "d", "prompt": "e"}\n',
     ["'prompt'"]),
]


@pytest.mark.parametrize("name,text,expect", DUP_JSON, ids=[c[0] for c in DUP_JSON])
def test_duplicate_json_keys_are_refused(name, text, expect):
    parse = parse_jsonl if name.startswith("jsonl") else parse_json
    with pytest.raises(QloraError) as info:
        parse(text, "f.json")
    for e in expect:
        assert e in str(info.value), (e, str(info.value))


def test_same_key_in_different_rows_is_fine():
    raw = parse_jsonl('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": "d"}\n', "f.jsonl")
    assert len(raw.rows) == 2


DUP_YAML = [
    ("top", "data: a.jsonl\nmax_steps: 3\nmax_steps: 30", ["line 3", "'max_steps'", "line 2"]),
    ("nested", "data: a.jsonl\nprobes: {a: 1, a: 2}", ["'a'"]),
    ("in-list", "data:\n  - {prompt: a, prompt: b}", ["'prompt'"]),
    ("quoted-equal", "data: a\n'data': b", ["'data'"]),
]


@pytest.mark.parametrize("name,body,expect", DUP_YAML, ids=[c[0] for c in DUP_YAML])
def test_duplicate_yaml_keys_are_refused(name, body, expect):
    with pytest.raises(QloraError) as info:
        parse_yaml_body(body, "qlora_train")
    for e in expect:
        assert e in str(info.value), (e, str(info.value))


def test_yaml_merge_keys_are_not_duplicates():
    body = "base: &b {r: 1}\nother:\n  <<: *b\n  s: 2\n"
    assert parse_yaml_body(body, "qlora_train")["other"] == {"r": "1", "s": "2"}


def test_duplicate_dataframe_and_parquet_columns_are_refused(tmp_path):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = pd.DataFrame([["a", "b", "c"]], columns=["prompt", "completion", "prompt"])
    with pytest.raises(QloraError, match="duplicate column.*'prompt'"):
        load_data(df)
    table = pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"]), pa.array(["c"])],
                                 names=["prompt", "completion", "completion"])
    pq.write_table(table, tmp_path / "dup.parquet")
    with pytest.raises(QloraError, match="duplicate column.*'completion'"):
        load_data(str(tmp_path / "dup.parquet"))


EMPTY = [
    ("jsonl-empty", [{"prompt": "a", "completion": ""}, {"prompt": "b", "completion": ""}]),
    ("jsonl-spaces", [{"prompt": "a", "completion": "  "}, {"prompt": "b", "completion": "\n"}]),
    ("instruction", [{"instruction": "a", "output": ""}]),
]


@pytest.mark.parametrize("name,rows", EMPTY, ids=[c[0] for c in EMPTY])
def test_all_empty_completions_are_refused(name, rows):
    with pytest.raises(QloraError, match="every row's completion .* is empty"):
        validate(load_data(rows), None)


def test_some_empty_completions_are_allowed():
    text = validate(load_data([{"prompt": "a", "completion": ""}, {"prompt": "b", "completion": "x"}]), None)
    assert len(text.rows) == 2


def test_empty_chat_replies_are_refused():
    from conftest import build_tokenizer

    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}] * 2
    with pytest.raises(QloraError, match="is empty"):
        validate(load_data(rows), None, build_tokenizer())


def test_pandas_nan_hint_says_keep_default_na(tmp_path):
    import pandas as pd

    path = tmp_path / "na.csv"
    path.write_text("prompt,completion\nNA,x\nb,null\n")
    df = pd.read_csv(path)
    with pytest.raises(QloraError) as info:
        validate(load_data(df), None)
    assert "keep_default_na=False" in str(info.value) and "row 0" in str(info.value)
    kept = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert validate(load_data(kept), None).rows[0]["prompt"] == "NA"


@pytest.mark.parametrize("env", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_hub_name_fails_fast_offline_without_retry_lines(monkeypatch, capfd, env):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append(a))
    monkeypatch.setenv(env, "1")
    with pytest.raises(QloraError, match="offline") as info:
        load_data("someone/some-dataset")
    assert calls == [] and env in str(info.value) or "HF_HUB_OFFLINE" in str(info.value)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


@pytest.mark.parametrize("text", ["my data", "what is this?", "a/b/c/d", "x y/z"])
def test_text_that_is_no_hub_id_never_goes_to_the_hub(monkeypatch, text):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append(a))
    with pytest.raises(QloraError, match="no data file"):
        load_data(text)
    assert calls == []


def test_hub_retry_warnings_stay_quiet(monkeypatch, capfd):
    import datasets

    def noisy(name, split):
        for lg in ("huggingface_hub", "datasets", "urllib3"):
            logging.getLogger(lg).warning("Retrying in 1s [Retry 1/5]")
        raise ConnectionError("offline")

    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(datasets, "load_dataset", noisy)
    with pytest.raises(QloraError, match="could not be loaded from the hub"):
        load_data("someone/arith")
    _, err = capfd.readouterr()
    assert "Retry" not in err


def test_json_rows_still_round_trip_text(tmp_path):
    rows = [{"prompt": "007", "completion": "1.50"}]
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert load_data(str(path)).rows == rows
