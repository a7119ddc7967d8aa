"""Fuzzing: whatever a user types into a magic line or a cell body, only QloraError comes out.

Every magic's argument parser (all registered by ``%load_ext qlora_nb``) and the
YAML body parser (then ``TrainConfig.from_options``) get arbitrary text; no
engine runs, so this stays fast.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qlora_nb.config import GenerateConfig, LoadConfig, TrainConfig
from qlora_nb.errors import QloraError
from qlora_nb.magics import magic_classes
from qlora_nb.magics.base import parse_args, parse_yaml_body

# No example database: the suite must not write a .hypothesis/ folder into the checkout.
FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _parsed_magics():
    """(magic name, bound method with a parser) for every magic that parses flags."""
    out = []
    for cls in magic_classes():
        obj = cls(shell=None)  # parsing needs no shell; no global IPython singleton is created here
        for kind in ("line", "cell"):
            for name, meth in obj.magics.get(kind, {}).items():
                if hasattr(meth, "parser"):
                    out.append((name, meth))
    return out


MAGICS = _parsed_magics()

# Text that looks like magic flags: real flag names, quotes, = signs, numbers, unicode.
_FLAGS = sorted({opt for _, m in MAGICS for a in m.parser._actions for opt in a.option_strings} | {"--", "-", "-h"})
_TOKEN = st.one_of(
    st.sampled_from(_FLAGS),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.sampled_from(['"', "'", "=", "$x", "-1", "0", "1e999", "nan", "inf", "\\", "\x00", "🙂", "--debug"]),
    st.integers().map(str),
    st.floats(allow_nan=True).map(str),
)
LINES = st.one_of(st.text(max_size=80), st.lists(_TOKEN, max_size=8).map(" ".join))


def test_every_magic_has_a_parser():
    names = {n for n, _ in MAGICS}
    assert {"qlora_load", "qlora_unload", "qlora_ledger", "qlora_load_adapter"} <= names


@pytest.mark.parametrize("name,meth", MAGICS, ids=[n for n, _ in MAGICS])
@FUZZ
@given(line=LINES)
def test_parse_args_raises_only_qlora_error(name, meth, line):
    try:
        parse_args(meth, line, name)
    except QloraError as exc:
        text = str(exc)
        assert text and "Traceback" not in text
        assert f"%{name}" in text or "argument" in text or "quote" in text


_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
_KEYS = st.one_of(st.sampled_from(TrainConfig.field_names() + list(TrainConfig.aliases())), st.text(max_size=10))
_YAML_VALUES = st.recursive(_SCALAR, lambda c: st.one_of(st.lists(c, max_size=3),
                                                          st.dictionaries(st.text(max_size=5), c, max_size=3)),
                            max_leaves=6)


def _yaml_dump(mapping) -> str:
    import yaml

    return yaml.safe_dump(mapping, allow_unicode=True)


YAML_BODIES = st.one_of(
    st.text(max_size=200),
    st.dictionaries(_KEYS, _YAML_VALUES, max_size=6).map(_yaml_dump),
    st.lists(st.sampled_from(["data: x.jsonl", "max_steps: -5", "lr: abc", "  - a", ": :", "{", "]", "*a", "&a b",
                              "!!python/object:os.system", "key: [1, 2", "epochs: .inf", "seed: 2024-01-01",
                              "\t", "cutoff_len: 0x10", "? complex", "data: |", "  text"]), max_size=6)
    .map("\n".join),
)


@FUZZ
@given(body=YAML_BODIES)
def test_yaml_body_and_train_options_raise_only_qlora_error(body):
    try:
        options = parse_yaml_body(body, "qlora_train")
        assert isinstance(options, dict)
        TrainConfig.from_options(options)
    except QloraError as exc:
        assert str(exc) and "Traceback" not in str(exc)


@FUZZ
@given(options=st.dictionaries(st.sampled_from(LoadConfig.field_names() + GenerateConfig.field_names()),
                               _YAML_VALUES, max_size=5))
def test_load_and_generate_options_raise_only_qlora_error(options):
    for cls in (LoadConfig, GenerateConfig):
        try:
            cls.from_options({k: v for k, v in options.items() if k in cls.field_names()})
        except QloraError as exc:
            assert str(exc)


def test_yaml_body_never_executes_tags():
    with pytest.raises(QloraError, match="not valid YAML"):
        parse_yaml_body("x: !!python/object/apply:os.system ['echo pwned']", "qlora_train")


# ------------------------------------------------ issue 15: the argument splitter and `$` interpolation
_WORD = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


def _shell_quote(word: str) -> str:
    """A single-quoted shell word; a ' inside is closed, written in double quotes, and reopened."""
    return "'" + word.replace("'", "'\"'\"'") + "'"


@FUZZ
@given(words=st.lists(_WORD, max_size=6))
def test_split_args_round_trips_quoted_words(words):
    from qlora_nb.textsplit import split_args

    assert split_args(" ".join(_shell_quote(w) for w in words)) == words


@FUZZ
@given(words=st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Cc"),
                                                     blacklist_characters="'\""), min_size=1, max_size=10),
                      max_size=6))
def test_split_args_keeps_plain_words_and_backslashes(words):
    from qlora_nb.textsplit import split_args

    assert split_args(" ".join(words)) == words


@FUZZ
@given(line=LINES)
def test_split_args_raises_only_qlora_error(line):
    from qlora_nb.textsplit import split_args

    try:
        out = split_args(line, where="%qlora_save")
    except QloraError as exc:
        assert "quot" in str(exc)
    else:
        assert all(isinstance(w, str) for w in out)


@FUZZ
@given(items=st.lists(_WORD, max_size=6))
def test_split_list_round_trips_quoted_items(items):
    from qlora_nb.textsplit import split_list

    text = ", ".join('"' + i.replace('"', '""') + '"' for i in items)
    assert split_list(text) == items


@FUZZ
@given(items=st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=",'\""),
                              max_size=10).map(str.strip).filter(bool), max_size=6))
def test_split_list_splits_unquoted_items_on_every_comma(items):
    from qlora_nb.textsplit import split_list

    assert split_list(",".join(items)) == [i.strip(" \t") for i in items if i.strip(" \t")]


@FUZZ
@given(text=st.text(max_size=40))
def test_split_list_raises_only_qlora_error(text):
    from qlora_nb.textsplit import split_list

    try:
        assert all(isinstance(i, str) for i in split_list(text, "option"))
    except QloraError as exc:
        assert "option" in str(exc)


_NS = {"x": object(), "df": [1, 2], "path": "a b/c", "n": 0, "_y": None}


@FUZZ
@given(value=st.one_of(st.text(max_size=20), st.text(max_size=12).map(lambda t: "$" + t),
                       st.sampled_from(["$x", "$df", "$$x", "$nope", "$", "$$", "$1", "$class", "$x y", "$_y"])))
def test_interpolation_is_exact_or_nothing(value):
    import keyword

    from qlora_nb.textsplit import interpolate

    name = value[1:]
    is_var = value.startswith("$") and not value.startswith("$$") and name.isidentifier() \
        and not keyword.iskeyword(name)
    try:
        out = interpolate(value, _NS, "option")
    except QloraError as exc:
        assert is_var and name not in _NS and f"$${name}" in str(exc)
        return
    if value.startswith("$$"):
        assert out == value[1:]
    elif is_var:
        assert out is _NS[name]
    else:
        assert out == value  # anything else stays exactly as written


@pytest.mark.parametrize("name,meth", [m for m in MAGICS if m[0] in ("qlora_save", "qlora_load", "qlora_export")],
                         ids=lambda v: v if isinstance(v, str) else "")
@FUZZ
@given(line=st.lists(st.one_of(_TOKEN, st.sampled_from(["$x", "$df", "$path", "$n", "$nope", "$$x", "$_y"])),
                     max_size=6).map(" ".join))
def test_parse_args_with_variables_raises_only_qlora_error(name, meth, line):
    try:
        args = parse_args(meth, line, name, _NS)
    except QloraError as exc:
        assert str(exc) and "Traceback" not in str(exc)
    else:
        assert all(not isinstance(v, (list, dict)) or k == "prompt" for k, v in vars(args).items())
