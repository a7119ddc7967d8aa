"""Issue 25: aliases, max_steps 0, adapter and run names, paths that exist, run-name collisions, compare prompts.

Table-driven, with more inputs than the issue's examples; the option boundaries are in
test_option_boundaries.py, the record splitter in test_record_splitting.py, the workbench in
test_workbench_state.py.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import pytest

import qlora_nb
from qlora_nb.config import GenerateConfig, LoadConfig, PlanConfig, TrainConfig
from qlora_nb.errors import QloraError, QloraWarning

BUG = "looks like a bug"


# ----------------------------------------------------------------------------- class 2: alias + own name
ALIAS_PAIRS = [
    (TrainConfig, {"lr": "1e-3", "learning_rate": "2e-4"}),
    (TrainConfig, {"learning_rate": "2e-4", "lr": "1e-3"}),
    (TrainConfig, {"optim": "adamw", "optimizer": "adamw_8bit"}),
    (TrainConfig, {"optim": "adamw", "optimizer": "adamw"}),  # equal values: still one key written twice
    (TrainConfig, {"num_train_epochs": 1, "epochs": 2}),
    (TrainConfig, {"max_seq_length": 64, "max_length": 128}),  # two aliases of one option
    (TrainConfig, {"learning-rate": "1e-3", "learning_rate": "2e-4"}),
    (TrainConfig, {"per_device_train_batch_size": 2, "batch_size": 4}),
    (TrainConfig, {"resume_from_checkpoint": True, "resume": False}),
    (LoadConfig, {"lora_alpha": 16, "alpha": 32}),
    (LoadConfig, {"target_modules": "q_proj", "targets": "all-linear"}),
    (LoadConfig, {"use_dora": True, "dora": False}),
    (LoadConfig, {"lora_dropout": 0.1, "dropout": 0.0}),
    (GenerateConfig, {"do_sample": True, "sample": False}),
    (PlanConfig, {"dropout": 0.1, "lora_dropout": 0.05}),
    (PlanConfig, {"cutoff_len": 128, "seq_len": 512}),
]


@pytest.mark.parametrize("cls,options", ALIAS_PAIRS, ids=[f"{c.__name__}-{'+'.join(o)}" for c, o in ALIAS_PAIRS])
def test_alias_and_name_in_one_mapping_are_refused(cls, options):
    if cls is TrainConfig:
        options = {"data": "demo", **options}
    keys = [k for k in options if k != "data"]
    with pytest.raises(QloraError, match="both set") as info:
        cls.from_options(options)
    text = str(info.value)
    assert repr(keys[0]) in text and repr(keys[1]) in text
    with pytest.raises(QloraError, match="both set"):  # the Python twin's keyword arguments alike
        cls.from_options(**options)


def test_alias_alone_and_options_plus_kwargs_still_work():
    assert TrainConfig.from_options({"data": "demo", "lr": "1e-3"}).learning_rate == 1e-3
    assert TrainConfig.from_options({"data": "demo", "optim": "adamw_8bit"}).optimizer == "adamw_8bit"
    # an options mapping plus keyword overrides (two sources) keeps "the keyword wins"
    assert TrainConfig.from_options({"data": "demo", "lr": "1e-3"}, learning_rate=5e-4).learning_rate == 5e-4


FLAG_TWICE = [
    ("%qlora_plan --lora-dropout 0.1 --dropout 0.2", "given twice"),
    ("%qlora_plan --seq-len 64 --cutoff-len 128", "given twice"),
    ("%qlora_plan -r 4 -r 8", "given twice"),
    ("%qlora_load --lora-alpha 16 --alpha 32", "given twice"),
    ("%qlora_load --targets q_proj --target-modules v_proj", "given twice"),
]


@pytest.mark.parametrize("line,expect", FLAG_TWICE, ids=[c[0] for c in FLAG_TWICE])
def test_a_flag_and_its_alias_are_refused(line, expect):
    from qlora_nb.magics import magic_classes
    from qlora_nb.magics.base import parse_args

    name = line.split()[0][1:]
    meth = next(getattr(cls(shell=None), name) for cls in magic_classes() if hasattr(cls, name))
    with pytest.raises(QloraError, match=expect):
        parse_args(meth, line.split(" ", 1)[1], name)


@pytest.mark.parametrize("value", [0, "0", 0.0, " 0 ", "0_0"])
def test_max_steps_zero_is_refused(value):
    with pytest.raises(QloraError, match="max_steps") as info:
        TrainConfig.from_options({"data": "demo", "max_steps": value})
    assert "-1" in str(info.value)


@pytest.mark.parametrize("value,ok", [(-1, True), (1, True), (-2, False), (2**40, True)])
def test_max_steps_other_values(value, ok):
    if ok:
        assert TrainConfig.from_options({"data": "demo", "max_steps": value}).max_steps == value
    else:
        with pytest.raises(QloraError, match="max_steps"):
            TrainConfig.from_options({"data": "demo", "max_steps": value})


# ----------------------------------------------------------------------------- class 5: adapter names
BAD_ADAPTER_NAMES = [
    ("base", "reserved"), ("Base", "reserved"), ("BASE ", "reserved"), ("__base__", "reserved"),
    ("a.b", "a dot"), (".hidden", "a dot"), ("", "non-empty"), ("   ", "non-empty"), ("a/b", "path separator"),
    ("a\\b", "path separator"), ("a\nb", "line-break"), ("a\rb", "line-break"), ("a\x00b", "control"),
    ("a\u2028b", "line-break"), ("x" * 65, "characters long"), (" lead", "spaces"),
]
GOOD_ADAPTER_NAMES = ["default", "v2", "my-adapter", "my_adapter", "ä_1", "a b", "based", "x" * 64]


@pytest.mark.parametrize("name,expect", BAD_ADAPTER_NAMES, ids=[repr(n) for n, _ in BAD_ADAPTER_NAMES])
def test_bad_adapter_names_are_refused_in_the_load_options(name, expect):
    with pytest.raises(QloraError, match=expect) as info:
        LoadConfig.from_options({"adapter_name": name})
    assert "adapter_name" in str(info.value) and BUG not in str(info.value)


@pytest.mark.parametrize("name", GOOD_ADAPTER_NAMES)
def test_good_adapter_names_are_kept_as_typed(name):
    assert LoadConfig.from_options({"adapter_name": name}).adapter_name == name


def test_adapter_names_through_load_adapter(tiny_session, tmp_path):
    saved = tiny_session.save(tmp_path / "ad")
    before = dict(tiny_session.adapters), set(tiny_session.model.peft_config)
    for name, expect in BAD_ADAPTER_NAMES:
        with pytest.raises(QloraError, match=expect if name.strip() else "adapter name") as info:
            tiny_session.load_adapter(saved, name=name)
        assert BUG not in str(info.value)
        assert (dict(tiny_session.adapters), set(tiny_session.model.peft_config)) == before
    assert tiny_session.load_adapter(saved, name="my-adapter") == "my-adapter"  # kept, not renamed to my_adapter
    assert "my-adapter" in tiny_session.model.peft_config
    base_folder = tiny_session.save(tmp_path / "base")  # a folder named base gives no default name
    with pytest.raises(QloraError, match="reserved"):
        tiny_session.load_adapter(base_folder)


def test_adapter_name_at_load(tiny_model_dir):
    s = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, adapter_name="v1")
    assert list(s.adapters) == ["v1"] and "v1" in s.model.peft_config
    for name, expect in BAD_ADAPTER_NAMES[:6]:
        with pytest.raises(QloraError, match=expect):
            qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, adapter_name=name)


# ----------------------------------------------------------------------------- class 7: paths that exist
def _fifo(tmp: Path) -> Path:
    p = tmp / "pipe.jsonl"
    os.mkfifo(p)
    return p


def _loop(tmp: Path) -> Path:
    a, b = tmp / "a.jsonl", tmp / "b.jsonl"
    os.symlink(b, a)
    os.symlink(a, b)
    return a


def _dangling(tmp: Path) -> Path:
    p = tmp / "gone.jsonl"
    os.symlink(tmp / "nowhere.jsonl", p)
    return p


def _folder(tmp: Path) -> Path:
    d = tmp / "data"
    d.mkdir()
    (d / "train.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    return d


def _empty_folder(tmp: Path) -> Path:
    d = tmp / "empty.jsonl"
    d.mkdir()
    return d


DATA_PATHS = [
    ("folder", _folder, ["is a folder", "train.jsonl"]),
    ("folder-named-jsonl", _empty_folder, ["is a folder"]),
    ("fifo", _fifo, ["FIFO"]),
    ("symlink-loop", _loop, ["symbolic link loop"]),
    ("dangling-link", _dangling, ["link to something that does not exist"]),
]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX only")
@pytest.mark.parametrize("case,make,expect", DATA_PATHS, ids=[c[0] for c in DATA_PATHS])
def test_existing_non_files_as_data_say_what_they_are(tmp_path, case, make, expect):
    from qlora_nb.data.load import load_data

    path = make(tmp_path)
    with pytest.raises(QloraError) as info:
        load_data(str(path))  # a FIFO must not be opened: that would block
    text = str(info.value)
    assert "no data file" not in text, text
    for e in expect:
        assert e in text, (e, text)


def test_missing_data_file_is_still_named_missing(tmp_path):
    from qlora_nb.data.load import load_data

    with pytest.raises(QloraError, match="no data file"):
        load_data(str(tmp_path / "nope.jsonl"))


_GOOD_CFG = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "vocab_size": 300, "model_type": "llama"}
BAD_CONFIGS = [
    ("not-json", "{", ["config.json", "not valid JSON", "line 1"]),
    ("a-list", "[]", ["config.json", "holds a list"]),
    ("text-hidden", {**_GOOD_CFG, "hidden_size": "abc"}, ["config.json", "hidden_size is 'abc'"]),
    ("zero-heads", {**_GOOD_CFG, "num_attention_heads": 0}, ["config.json", "num_attention_heads is 0"]),
    ("float-layers", {**_GOOD_CFG, "num_hidden_layers": 2.5}, ["num_hidden_layers is 2.5"]),
    ("bool-vocab", {**_GOOD_CFG, "vocab_size": True}, ["vocab_size is True"]),
    ("negative-inter", {**_GOOD_CFG, "intermediate_size": -1}, ["intermediate_size is -1"]),
    ("missing-vocab", {k: v for k, v in _GOOD_CFG.items() if k != "vocab_size"}, ["config.json has no 'vocab_size'"]),
    ("text-config-str", {"text_config": "x"}, ["text_config is a str"]),
    ("kv-heads-text", {**_GOOD_CFG, "num_key_value_heads": "two"}, ["num_key_value_heads is 'two'"]),
    ("latin1", b"\xff\xfe{", ["not UTF-8"]),
]


@pytest.mark.parametrize("case,content,expect", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
@pytest.mark.parametrize("give", ["file", "folder"])
def test_malformed_config_json_names_the_file(tmp_path, case, content, expect, give):
    import json

    folder = tmp_path / "my-model"
    folder.mkdir()
    cfg = folder / "config.json"
    if isinstance(content, bytes):
        cfg.write_bytes(content)
    else:
        cfg.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(QloraError) as info:
        qlora_nb.plan(model=str(cfg if give == "file" else folder), gpu="24GB")
    text = str(info.value)
    assert str(cfg) in text, text
    assert "the config of" not in text and "lacks or mangles" not in text
    for e in expect:
        assert e in text, (e, text)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX only")
def test_plan_model_that_is_a_fifo_or_an_empty_folder(tmp_path):
    with pytest.raises(QloraError, match="FIFO"):
        qlora_nb.plan(model=str(_fifo(tmp_path)), gpu="24GB")
    (tmp_path / "empty").mkdir()
    with pytest.raises(QloraError, match="has no config.json file"):
        qlora_nb.plan(model=str(tmp_path / "empty"), gpu="24GB")


# ----------------------------------------------------------------------------- class 8: default run names
def test_default_run_names_are_unique_within_one_second(tmp_path, monkeypatch):
    from qlora_nb.engine.training.run_output import default_run_name

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "run-20260101-000000")
    names = [default_run_name(Path("runs")) for _ in range(5)]
    assert len(set(names)) == 5 and names[0] == "run-20260101-000000" and names[1] == "run-20260101-000000-2"
    (tmp_path / "runs" / "run-20260101-000000-6").mkdir(parents=True)  # a folder from another process
    assert default_run_name(Path("runs")) == "run-20260101-000000-7"


def test_two_quick_runs_get_two_folders(tiny_session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "run-20260101-000001")
    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(6)]
    a = tiny_session.train(rows, max_steps=1, val_split=0)
    b = tiny_session.train(rows, max_steps=1, val_split=0)
    assert a.output_dir != b.output_dir and Path(a.output_dir).is_dir() and Path(b.output_dir).is_dir()


# ----------------------------------------------------------------------------- minor: run names, quant, rank
BAD_RUN_NAMES = [
    ("../../x", "path separator"), ("..", "folder above"), (".", "same folder"), ("a/b", "path separator"),
    ("a\\b", "path separator"), ("/abs", "path separator"), ("a\nb", "line-break"), ("a\tb", "control"),
    ("", "empty"), ("  ", "empty"), ("x" * 300, "bytes long"),
]


@pytest.mark.parametrize("name,expect", BAD_RUN_NAMES, ids=[repr(n)[:20] for n, _ in BAD_RUN_NAMES])
def test_bad_run_names_are_refused(name, expect):
    with pytest.raises(QloraError, match=expect) as info:
        TrainConfig.from_options({"data": "demo", "run_name": name})
    assert "run_name" in str(info.value)


@pytest.mark.parametrize("name", ["my-run", "run 1", "ünï", "v1.2", "x" * 100])
def test_good_run_names(name):
    assert TrainConfig.from_options({"data": "demo", "run_name": name}).run_name == name


def test_run_name_outside_runs_writes_nothing(tiny_session, tmp_path, monkeypatch):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    with pytest.raises(QloraError, match="run_name"):
        tiny_session.train([{"prompt": "a", "completion": "b"}] * 4, max_steps=1, run_name="../../x")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b"]


QUANT_BITS = [
    (LoadConfig, {"quant": "fp4", "bits": 8}, "quant"),
    (LoadConfig, {"quant": "fp4", "bits": 16}, "quant"),
    (PlanConfig, {"quant": "fp4", "bits": 8}, "quant"),
    (PlanConfig, {"quant": "fp4", "method": "lora"}, "quant"),
    (PlanConfig, {"quant": "fp4", "method": "full"}, "quant"),
]


@pytest.mark.parametrize("cls,options,expect", QUANT_BITS, ids=[str(o) for _, o, _ in QUANT_BITS])
def test_quant_without_a_4bit_base_is_refused(cls, options, expect):
    with pytest.raises(QloraError, match=expect):
        cls.from_options(options)


def test_quant_with_a_4bit_base_is_kept():
    assert LoadConfig.from_options({"quant": "fp4", "bits": 4}).quant == "fp4"
    assert LoadConfig.from_options({"bits": 8}).bits == 8  # the default quant is not "given"
    assert PlanConfig.from_options({"quant": "fp4"}).quant == "fp4"


def test_rank_above_the_layer_width_says_how_many_parameters(tiny_model_dir):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = qlora_nb.load(str(tiny_model_dir), r=200, alpha=8)
    msgs = [str(w.message) for w in caught if issubclass(w.category, QloraWarning)]
    assert msgs, [str(w.message) for w in caught]
    assert "trainable parameters" in msgs[0] and "MiB" in msgs[0]
    assert f"{s.params['trainable']:,} trainable parameters" in msgs[0], (s.params, msgs[0])
