"""Data: every format, every validation error (exact text), text kept exactly, templates, masks and batching."""

from __future__ import annotations

import json

import pytest

from qlora_nb.data.collate import IGNORE, make_collator, tokenize_rows
from qlora_nb.data.load import load_data
from qlora_nb.data.template import Template, chat_prompt, default_template, free_text_prompt
from qlora_nb.data.validate import validate
from qlora_nb.errors import QloraError

TPL = "### Instruction: {instruction}\n### Input: {input}\n### Response: {output}"


@pytest.fixture(scope="module")
def tok():
    from conftest import build_tokenizer

    return build_tokenizer()


def rows_of(data, template=TPL, tok=None):
    return validate(load_data(data), template, tok).rows


def error_text(fn) -> str:
    with pytest.raises(QloraError) as info:
        fn()
    return str(info.value)


# ------------------------------------------------------------------ formats, text kept exactly
def test_jsonl_numbers_booleans_and_dates_keep_their_written_text(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"instruction": "2024-01-01", "input": 1.50, "output": 1e5}\n\n'
                 '{"instruction": "007", "input": true, "output": -0.0}\n', encoding="utf-8")
    assert rows_of(p) == [{"instruction": "2024-01-01", "input": "1.50", "output": "1e5"},
                          {"instruction": "007", "input": "true", "output": "-0.0"}]


def test_json_array_object_wrapper_and_json_lines_named_json(tmp_path):
    rows = [{"instruction": "a", "input": 3.10, "output": "x"}, {"instruction": "b", "input": "", "output": "y"}]
    arr = tmp_path / "arr.json"
    arr.write_text('[\n  {"instruction": "a", "input": 3.10, "output": "x"},\n'
                   '  {"instruction": "b", "input": "", "output": "y"}\n]', encoding="utf-8")
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text('{"data": [{"instruction": "a", "input": 3.10, "output": "x"}, '
                       '{"instruction": "b", "input": "", "output": "y"}]}', encoding="utf-8")
    lines = tmp_path / "lines.json"
    lines.write_text("\n".join(json.dumps(r) for r in rows).replace("3.1", "3.10"), encoding="utf-8")
    expected = [{"instruction": "a", "input": "3.10", "output": "x"}, {"instruction": "b", "input": "", "output": "y"}]
    for p in (arr, wrapped, lines):
        assert rows_of(p) == expected, p.name
    assert load_data(arr).where == ["arr.json, line 2 (row 1)", "arr.json, line 3 (row 2)"]


def test_csv_and_tsv_cells_are_the_files_text(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('instruction,input,output\n007,NA,1.50\n"multi\nline",2024-01-01,""\n', encoding="utf-8")
    raw = load_data(p)
    assert rows_of(p) == [{"instruction": "007", "input": "NA", "output": "1.50"},
                          {"instruction": "multi\nline", "input": "2024-01-01", "output": ""}]
    assert raw.where == ["d.csv, line 2", "d.csv, line 3"]
    t = tmp_path / "d.tsv"
    t.write_text("instruction\tinput\toutput\nTRUE\t  0x1F \tnull\n", encoding="utf-8")
    assert rows_of(t) == [{"instruction": "TRUE", "input": "  0x1F ", "output": "null"}]


def test_parquet_strings_load_and_typed_columns_are_refused(tmp_path):
    import pandas as pd

    p = tmp_path / "d.parquet"
    pd.DataFrame({"instruction": ["007"], "input": ["1.50"], "output": ["x"], "id": [3]}).to_parquet(p)
    assert rows_of(p) == [{"instruction": "007", "input": "1.50", "output": "x"}]
    q = tmp_path / "typed.parquet"
    pd.DataFrame({"instruction": ["a"], "input": [1.5], "output": ["x"]}).to_parquet(q)
    assert error_text(lambda: rows_of(q)).startswith(
        "train option 'data': typed.parquet, row 1: field 'input' is a number (float 1.5), not text.")


def test_list_of_dicts_and_dataframe(tmp_path):
    import pandas as pd

    records = [{"instruction": "a", "input": "{x}", "output": "b"}]
    assert rows_of(records) == records
    df = pd.DataFrame({"instruction": ["a", "b"], "input": ["007", None], "output": ["x", "y"]}, index=[10, 11])
    assert error_text(lambda: rows_of(df)).startswith(
        "train option 'data': the DataFrame, row 11: field 'input' is null/missing (None), not text.")
    assert rows_of(df.fillna("")) == [{"instruction": "a", "input": "007", "output": "x"},
                                      {"instruction": "b", "input": "", "output": "y"}]


def test_hub_dataset_name_goes_through_datasets(monkeypatch):
    import datasets

    calls = []

    def fake_load(name, split):
        calls.append((name, split))
        return datasets.Dataset.from_dict({"prompt": ["Q: 1+1\nA: "], "completion": ["2"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    text = validate(load_data("someone/arith"), None)
    assert calls == [("someone/arith", "train")]
    assert text.rows == [{"prompt": "Q: 1+1\nA: ", "completion": "2"}]
    assert text.template.render(text.rows[0]) == "Q: 1+1\nA: 2"


def test_hub_failure_is_one_error(monkeypatch):
    import datasets

    def boom(name, split):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    assert error_text(lambda: load_data("nobody/nothing")).startswith(
        "train option 'data': 'nobody/nothing' is not a local file and could not be loaded from the hub (offline).")


def test_demo_data_has_a_disjoint_held_out_split():
    raw = load_data("demo")
    assert len(raw.rows) >= 200 and len(raw.val_rows) >= 20
    text = validate(raw, None)
    assert text.template.text.startswith("### Instruction:")
    train_names = {json.loads(r["output"])["name"].split()[0] for r in text.rows}
    val_names = {json.loads(r["output"])["name"].split()[0] for r in text.val_rows}
    assert not train_names & val_names


def test_chat_messages_rendered_with_the_tokenizers_template(tmp_path, tok):
    p = tmp_path / "chat.jsonl"
    p.write_text(json.dumps({"messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Hi 007"},
                                          {"role": "assistant", "content": "Hello"}]}) + "\n", encoding="utf-8")
    text = validate(load_data(p), None, tok)
    assert text.chat_format
    row = text.rows[0]
    assert row["prompt"] == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi 007<|im_end|>\n"
                             "<|im_start|>assistant\n")
    assert row["output"] == "Hello<|im_end|>\n"
    assert text.template.prompt(row) == row["prompt"]
    assert chat_prompt(tok, "Hi") == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


# ----------------------------------------------------------------------- validation errors
def test_empty_data_is_refused(write_jsonl, tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("\n", encoding="utf-8")
    assert error_text(lambda: rows_of(p)) == (
        "train option 'data': empty.jsonl: the data has no rows. "
        "Give at least a few examples (a file with one example per line/row).")
    assert "the list: the data has no rows." in error_text(lambda: rows_of([]))


def test_missing_field_names_file_line_and_field(write_jsonl):
    p = write_jsonl([{"instruction": "a", "input": "", "output": "x"}, {"instruction": "b", "output": "y"}])
    msg = error_text(lambda: rows_of(p))
    assert msg == ("train option 'data': data.jsonl, line 2: field 'input' is missing. "
                   "Every row needs the template's fields: instruction, input, output.")


def test_wrong_type_names_the_type(write_jsonl):
    p = write_jsonl([{"instruction": "a", "input": "", "output": "x"},
                     {"instruction": "b", "input": ["list"], "output": "y"}])
    assert error_text(lambda: rows_of(p)).startswith(
        "train option 'data': data.jsonl, line 2: field 'input' is a list, not text. "
        "Fields reach the prompt exactly as written, so they must be text")
    q = write_jsonl([{"instruction": None, "input": "", "output": "x"}], name="null.jsonl")
    assert "null.jsonl, line 1: field 'instruction' is null/missing (None), not text." in error_text(lambda: rows_of(q))


def test_template_field_without_column(write_jsonl):
    p = write_jsonl([{"instruction": "a", "input": "", "output": "x"}])
    msg = error_text(lambda: rows_of(p, "{instrucion} {context}{output}"))
    assert msg == ("train option 'template': data.jsonl: template field(s) {instrucion} (did you mean "
                   "'instruction'?), {context} match no column. The data's columns are: instruction, input, output. "
                   "Rename the field or the column.")


def test_unknown_layout_without_template(write_jsonl):
    p = write_jsonl([{"question": "a", "answer": "x"}])
    assert error_text(lambda: rows_of(p, None)).startswith(
        "train option 'template': data.jsonl: no template given and the columns (question, answer) "
        "are not a known layout.")


def test_file_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": "1"}\n{"a": \n', encoding="utf-8")
    assert error_text(lambda: load_data(bad)).startswith("train option 'data': bad.jsonl, line 2: not valid JSON")
    arr = tmp_path / "arr.jsonl"
    arr.write_text('["not", "an object"]\n', encoding="utf-8")
    assert "arr.jsonl, line 1: expected a JSON object, got an array." in error_text(lambda: load_data(arr))
    assert error_text(lambda: load_data(tmp_path / "nope.jsonl")).startswith(
        f"train option 'data': no data file {str(tmp_path / 'nope.jsonl')!r}.")
    txt = tmp_path / "d.txt"
    txt.write_text("x", encoding="utf-8")
    assert error_text(lambda: load_data(txt)).startswith("train option 'data': 'd.txt' has an unsupported extension")
    csvp = tmp_path / "wide.csv"
    csvp.write_text("instruction,output\na,b,c\n", encoding="utf-8")
    assert "wide.csv, line 2: 3 cells but the header names 2 columns." in error_text(lambda: load_data(csvp))


def test_chat_errors_name_the_row_and_turn(write_jsonl, tok):
    p = write_jsonl([{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
                     {"messages": [{"role": "user", "content": "a"}]}])
    assert error_text(lambda: rows_of(p, None, tok)).startswith(
        "train option 'data': data.jsonl, line 2: the last message is from 'user', not 'assistant'.")
    q = write_jsonl([{"messages": [{"role": "user", "content": None}, {"role": "assistant", "content": "b"}]}],
                    "q.jsonl")
    assert error_text(lambda: rows_of(q, None, tok)).startswith(
        "train option 'data': q.jsonl, line 1: message 1 'content' is null/missing (None), not text.")
    r = write_jsonl([{"messages": [{"role": "user"}, {"role": "assistant", "content": "b"}]}], "r.jsonl")
    assert error_text(lambda: rows_of(r, None, tok)).startswith(
        "train option 'data': r.jsonl, line 1: message 1 has no 'content'.")


# ------------------------------------------------------------------------------- templates
def test_template_split_and_verbatim_values():
    t = Template.parse(TPL + "</s>")
    row = {"instruction": "use {braces}", "input": "007", "output": "1.50"}
    assert t.fields == ["instruction", "input", "output"]
    assert t.prompt(row) == "### Instruction: use {braces}\n### Input: 007\n### Response: "
    assert t.completion(row) == "1.50</s>"
    assert t.prompt_from_text("hello") == "### Instruction: hello\n### Input: \n### Response: "


@pytest.mark.parametrize("text, fragment", [
    ("no output here", "has no {output} field"),
    ("{output} then {x}", "has field(s) x after {output}"),
    ("{a:>3}{output}", "formats field 'a' (:>3)"),
    ("{}{output}", "has an unnamed field {}"),
    ("{a{output}", "is not a valid format string"),
    ("{a.b}{output}", "is not a plain column name"),
    ("{output}{output}", "has more than one {output} field"),
])
def test_bad_templates_are_named(text, fragment):
    msg = error_text(lambda: Template.parse(text))
    assert msg.startswith(f"train option 'template': template {text!r}") and fragment in msg


def test_default_templates_from_columns():
    assert default_template(["instruction", "input", "output"]).prompt_fields == ["instruction", "input"]
    assert default_template(["instruction", "output"]).prompt_fields == ["instruction"]
    assert default_template(["prompt", "completion"]).output == "completion"
    assert default_template(["messages"]) is None


def test_free_text_prompt_follows_the_training_template(tok):
    class S:
        tokenizer = tok
        template = Template.parse("Q: {q}\nA: {output}")
        chat_format = False

    assert free_text_prompt(S, "2+2?") == "Q: 2+2?\nA: "
    S.chat_format = True
    assert free_text_prompt(S, "2+2?") == chat_prompt(tok, "2+2?")


# ------------------------------------------------------------------ masks, truncation, batching
def test_completion_only_mask_and_eos(tok):
    t = Template.parse("Q: {q}\nA: {output}")
    rows = [{"q": "abc", "output": "xy"}]
    ex = tokenize_rows(rows, t, tok, cutoff_len=64).examples[0]
    n_prompt = len(tok("Q: abc\nA: ")["input_ids"])
    assert ex["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:]
    assert ex["input_ids"][n_prompt:] == tok("xy", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    full = tokenize_rows(rows, t, tok, cutoff_len=64, completion_only=False).examples[0]
    assert full["labels"] == full["input_ids"]


def test_long_rows_are_truncated_and_counted(tok):
    t = Template.parse("{q}{output}")
    out = tokenize_rows([{"q": "p" * 50, "output": "c" * 50}, {"q": "a", "output": "b"}], t, tok, cutoff_len=40)
    assert out.truncated == 1
    long, short = out.examples
    assert len(long["input_ids"]) == 40
    assert sum(x != IGNORE for x in long["labels"]) == 20  # half of the budget stays for the completion
    assert len(short["input_ids"]) == 3


def test_dynamic_padding_and_packing(tok):
    import torch

    batch = [{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]}, {"input_ids": [8, 9], "labels": [IGNORE, 9]}]
    padded = make_collator(tok)(batch)
    assert padded["input_ids"].shape == (2, 3)  # the batch's longest row, not cutoff_len
    assert padded["labels"][1].tolist() == [IGNORE, 9, IGNORE]
    assert padded["attention_mask"].sum().item() == 5
    packed = make_collator(tok, packing=True)(batch)
    assert packed["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert packed["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, 9]]
    assert "attention_mask" not in packed and isinstance(packed["input_ids"], torch.Tensor)
