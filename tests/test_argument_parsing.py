"""Issue 15, class 4: arguments are parsed the way a shell user expects.

Tables over the splitter, the list splitter and ``$`` interpolation, then the
same rules through every magic that takes a path, in a real IPython shell.
"""

from __future__ import annotations

import pytest

from qlora_nb.config import GenerateConfig, LoadConfig, PlanConfig, TrainConfig
from qlora_nb.errors import QloraError
from qlora_nb.textsplit import interpolate, split_args, split_list

SPLIT = [
    ("", []),
    ("   ", []),
    ("a b  c", ["a", "b", "c"]),
    ('"my adapter"', ["my adapter"]),
    ("'my adapter'", ["my adapter"]),
    ('runs/"my adapter"/v1', ["runs/my adapter/v1"]),
    ('--name="my run" --r 4', ["--name=my run", "--r", "4"]),
    ('"it\'s here"', ["it's here"]),
    ("'say \"hi\"'", ['say "hi"']),
    (r"C:\runs\v1 --overwrite", [r"C:\runs\v1", "--overwrite"]),
    (r'"C:\my runs\v1"', [r"C:\my runs\v1"]),
    ("notes#1 # not a comment", ["notes#1", "#", "not", "a", "comment"]),
    ('"" x', ["", "x"]),
    ("ünïcode 'dossier ü'", ["ünïcode", "dossier ü"]),
    ("\ta\n b", ["a", "b"]),
]


@pytest.mark.parametrize("line,words", SPLIT, ids=[repr(s) for s, _ in SPLIT])
def test_split_args_removes_quotes_and_keeps_backslashes(line, words):
    assert split_args(line) == words


@pytest.mark.parametrize("line", ['"my adapter', "'x", 'a "b c', "--name 'it"])
def test_unclosed_quote_is_one_error(line):
    with pytest.raises(QloraError, match="quot"):
        split_args(line, where="%qlora_save")


LISTS = [
    ("q_proj,v_proj", ["q_proj", "v_proj"]),
    (" q_proj , v_proj ,", ["q_proj", "v_proj"]),
    ("a,,b", ["a", "b"]),
    ('"Hello, world", Bye', ["Hello, world", "Bye"]),
    ("'a, b','c,d'", ["a, b", "c,d"]),
    ("what's up, ok", ["what's up", "ok"]),
    ('"say ""hi"", then go", x', ['say "hi", then go', "x"]),
    ("'it''s, fine'", ["it's, fine"]),
    ('"", x', ["", "x"]),
    ("single", ["single"]),
    ("", []),
]


@pytest.mark.parametrize("text,items", LISTS, ids=[repr(t) for t, _ in LISTS])
def test_split_list_never_splits_inside_a_quoted_item(text, items):
    assert split_list(text) == items


@pytest.mark.parametrize("text,fragment", [('"a, b', "not closed"), ("'x", "not closed"),
                                           ('"a" b, c', "unexpected text")])
def test_split_list_errors_name_the_item(text, fragment):
    with pytest.raises(QloraError, match=fragment):
        split_list(text, "train option 'probes'")


def test_list_options_use_the_quote_aware_splitter():
    assert TrainConfig.from_options({"data": "x", "probes": '"Hello, world", Bye'}).probes == ["Hello, world", "Bye"]
    assert LoadConfig.from_options({"targets": '"q_proj", v_proj'}).targets == ["q_proj", "v_proj"]
    assert GenerateConfig.from_options({"adapters": "'a,b', c"}).adapters == ["a,b", "c"]
    assert PlanConfig.from_options({"targets": "q_proj,v_proj"}).targets == ["q_proj", "v_proj"]
    assert TrainConfig.from_options({"data": "x", "probes": ["a, b", "c"]}).probes == ["a, b", "c"]  # a list stays


NS = {"df": object(), "x": "text value", "n": 3, "_private": 1, "ünï": "u"}

INTERP = [
    ("$x", "text value"),
    ("$n", 3),
    ("$_private", 1),
    ("$ünï", "u"),
    ("$$x", "$x"),
    ("$$", "$"),
    ("$$$x", "$$x"),
    ("$", "$"),
    ("costs $5", "costs $5"),
    ("$5", "$5"),
    ("$x y", "$x y"),
    ("x$y", "x$y"),
    ("$x.y", "$x.y"),
    ("$class", "$class"),  # a keyword is no variable name
    ("$x-1", "$x-1"),
    ("Q: {question} costs $x", "Q: {question} costs $x"),
    (5, 5),
    (None, None),
    (["$x"], ["$x"]),  # only a whole value, not items inside a list
]


@pytest.mark.parametrize("value,expected", INTERP, ids=[repr(v) for v, _ in INTERP])
def test_interpolation_only_for_a_whole_dollar_identifier(value, expected):
    assert interpolate(value, NS, "option") == expected


def test_interpolation_of_a_missing_variable_names_the_escape():
    with pytest.raises(QloraError, match=r"no variable named 'nope'.*\$\$nope"):
        interpolate("$nope", NS, "train option 'data'")
    assert interpolate("$df", NS, "w") is NS["df"]


# ----------------------------------------------------------------------------- in a shell
@pytest.fixture(scope="module")
def shell(tmp_path_factory, tiny_model_dir):
    import shutil

    import pandas as pd
    import torch
    from IPython.testing import globalipapp

    import qlora_nb

    tmp = tmp_path_factory.mktemp("args")
    spaced = tmp / "tiny model"
    shutil.copytree(tiny_model_dir, spaced)
    ip = globalipapp.start_ipython() or globalipapp.get_ipython()
    ip.run_line_magic("load_ext", "qlora_nb")
    s = qlora_nb.load(str(spaced), r=4, alpha=8, dropout=0.0)
    with torch.no_grad():  # a "trained" adapter, so merge has something to merge
        for n, p in s.model.named_parameters():
            if "lora_B" in n:
                p.add_(0.01)
    (tmp / "my data.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    ip.user_ns.update(qlora=s, df=pd.DataFrame({"prompt": ["a"], "completion": ["b"]}),
                      spaced_dir=str(tmp / "by variable"))
    yield ip, tmp, spaced
    ip.run_line_magic("unload_ext", "qlora_nb")
    for k in ("qlora", "df", "spaced_dir", "q2", "plan_spaced"):
        ip.user_ns.pop(k, None)


def _run(ip, cell):
    from test_bad_input import run_cell

    return run_cell(ip, cell)


def test_quoted_paths_with_spaces_work_in_every_magic(shell):
    ip, tmp, spaced = shell
    cells = [
        f'%qlora_save "{tmp}/my adapter"',
        f"%qlora_save '{tmp}/single quoted'",
        f'%qlora_load_adapter "{tmp}/my adapter" --name "loaded_back"',
        f'%qlora_export "{tmp}/my job" --data "{tmp}/my data.jsonl"',
        f'%qlora_merge "{tmp}/my merged" --no-verify --dtype fp32',
        f'%qlora_load "{spaced}" --quiet --name q2',
        f'%qlora_plan "{spaced}" --text -o plan_spaced',
        "%qlora_save $spaced_dir",
    ]
    for cell in cells:
        result, out = _run(ip, cell)
        assert result.success, (cell, out)
    for name in ("my adapter", "single quoted", "my job", "my merged", "by variable"):
        assert (tmp / name).is_dir(), name
    assert not any('"' in p.name or "'" in p.name for p in tmp.iterdir())
    assert "loaded_back" in ip.user_ns["qlora"].adapters
    assert ip.user_ns["q2"].model_path == spaced


def test_export_data_dataframe_says_what_to_do(shell):
    ip, tmp, _ = shell
    result, out = _run(ip, f"%qlora_export {tmp}/job_df --data $df")
    assert not result.success
    assert "$df is a DataFrame" in out and "to_json" in out and "--data" in out
    assert "unrecognized" not in out and not (tmp / "job_df").exists()


def test_dollar_in_a_magic_line_is_not_expanded_by_ipython(shell):
    ip, tmp, _ = shell
    result, out = _run(ip, f'%qlora_save "{tmp}/$$literal"')  # not a whole word: kept exactly as typed
    assert result.success, out
    assert (tmp / "$$literal").is_dir()
    from qlora_nb.magics.base import parse_args

    meth = ip.magics_manager.magics["line"]["qlora_save"]
    assert parse_args(meth, "$$adapter --overwrite", "qlora_save", {}).directory == "$adapter"
    assert parse_args(meth, "$spaced_dir", "qlora_save", ip.user_ns).directory == str(tmp / "by variable")
    result, out = _run(ip, f"%qlora_save {tmp}/$nope_var")  # not a whole word: kept as typed
    assert result.success, out
    assert (tmp / "$nope_var").is_dir()
    result, out = _run(ip, "%qlora_save $nope_var")
    assert not result.success and "no variable named 'nope_var'" in out
