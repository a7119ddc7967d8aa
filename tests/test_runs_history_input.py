"""Run history over hand-edited or foreign files: a bad ``log_history`` entry is skipped with a note on its row, a
``train_config.json`` of the wrong type is named as unreadable (not "still training"), and neither the listing, the
text, the comparison nor the widget raises."""

from __future__ import annotations

import json

import pytest

import qlora_nb
from qlora_nb.engine.training.runs import list_runs
from qlora_nb.overwrite import write_marker

GOOD_CONFIG = {"train": {"max_steps": 4, "learning_rate": 1e-3}, "load": {"model": "tiny"},
               "metrics": {"steps": 4, "max_steps": 4, "eval_loss": 1.5}}
GOOD_HISTORY = [{"step": 2, "loss": 2.0, "learning_rate": 1e-3}, {"step": 4, "loss": 1.8, "learning_rate": 5e-4},
                {"step": 4, "eval_loss": 1.5}]


def make_run(root, name, config=GOOD_CONFIG, history=GOOD_HISTORY, state=None):
    folder = root / name
    folder.mkdir(parents=True)
    write_marker(folder, "run")
    if config is not None:
        text = config if isinstance(config, str) else json.dumps(config)
        (folder / "train_config.json").write_text(text)
    if state is None:
        state = {"log_history": history}
    (folder / "trainer_state.json").write_text(json.dumps(state))
    return folder


def _shown_everywhere(root):
    """Every reader of the history: listing, text, summaries, curves, comparison, widget; none may raise."""
    runs = list_runs(root)
    text = runs.text()
    event = runs.to_event()
    if len(runs) >= 2:
        runs.compare(*runs.names).text()
    view = qlora_nb.runs_view(str(root)) if hasattr(qlora_nb, "runs_view") else None
    if view is not None:
        view.text()
    return runs, text, event


@pytest.mark.parametrize(("history", "note"), [
    ([{"loss": 2.0}, *GOOD_HISTORY], "entry 0 has no step"),
    ([{"step": "2", "loss": 2.0}, *GOOD_HISTORY], "entry 0 has step '2'"),
    ([{"step": 2.5, "loss": 2.0}, *GOOD_HISTORY], "entry 0 has step 2.5"),
    ([{"step": True, "loss": 2.0}, *GOOD_HISTORY], "entry 0 has step True"),
    ([*GOOD_HISTORY, {"step": 6, "loss": "nan?"}], "entry 3 has loss 'nan?'"),
    ([*GOOD_HISTORY, {"step": 6, "eval_loss": [1]}], "entry 3 has eval_loss [1]"),
    ([*GOOD_HISTORY, {"step": 6, "learning_rate": {}}], "entry 3 has learning_rate {}"),
    ([*GOOD_HISTORY, "step 6"], "entry 3 is a str"),
    ([None, *GOOD_HISTORY, 7], "entry 0 is a NoneType; entry 4 is a int"),
])
def test_a_bad_log_history_entry_is_skipped_with_a_note_on_its_row(tmp_path, history, note):
    make_run(tmp_path, "good")
    make_run(tmp_path, "odd", history=history)
    runs, text, event = _shown_everywhere(tmp_path)
    odd = runs["odd"]
    assert any(n.startswith("log_history: ") and note in n for n in odd.notes), odd.notes
    assert odd.curve()["steps"] == [2, 4] and odd.curve()["eval_loss"] == [1.5]  # the good entries all kept
    assert odd.status == "done" and not runs["good"].notes
    assert note in text and event["curves"]["odd"]["loss"] == [2.0, 1.8]


@pytest.mark.parametrize("log_history", ["loss went down", {"step": 2}, 3])
def test_a_log_history_that_is_not_a_list_gives_no_curve(tmp_path, log_history):
    make_run(tmp_path, "r", state={"log_history": log_history})
    runs, text, _ = _shown_everywhere(tmp_path)
    assert runs["r"].history == [] and "log_history is a" in text


@pytest.mark.parametrize(("config", "why"), [
    ([1, 2], "it holds a list"),
    ({"options": "x"}, "it has no 'train' (keys: options)"),
    ({"train": "x"}, "its 'train' is a str"),
    ({"train": [["max_steps", 4]]}, "its 'train' is a list"),
    ("3", "it holds a int"),
    ("null", "it holds null"),
])
def test_a_train_config_of_the_wrong_type_is_named_unreadable(tmp_path, config, why):
    make_run(tmp_path, "r", config=config)
    runs, text, _ = _shown_everywhere(tmp_path)
    r = runs["r"]
    assert r.status == "unreadable" and "still training" not in text
    assert any(n.startswith("train_config.json is unreadable: " + why) for n in r.notes), r.notes


@pytest.mark.parametrize(("text", "note"), [('{"train": {', "could not be read (JSONDecodeError)"),
                                            ("", "could not be read (JSONDecodeError)")])
def test_a_torn_train_config_is_named_not_still_training(tmp_path, text, note):
    make_run(tmp_path, "r", config=text)
    runs, listing, _ = _shown_everywhere(tmp_path)
    assert runs["r"].status == "incomplete" and note in listing and "still training" not in listing


@pytest.mark.parametrize(("section", "value"), [("metrics", "x"), ("metrics", [1]), ("load", "tiny")])
def test_a_section_of_the_wrong_type_is_left_out_with_a_note(tmp_path, section, value):
    make_run(tmp_path, "r", config={**GOOD_CONFIG, section: value})
    runs, text, _ = _shown_everywhere(tmp_path)
    assert f"train_config.json's {section!r} is a {type(value).__name__}, not a dict: left out" in text


@pytest.mark.parametrize("metrics", [{"tokens_per_s": "fast", "peak_rss": "1GB", "wall_s": [1], "max_steps": "4"},
                                     {"steps": "4", "eval_loss": "low", "eval_metric_summary": 3}])
def test_metric_values_of_the_wrong_type_show_as_missing(tmp_path, metrics):
    make_run(tmp_path, "r", config={**GOOD_CONFIG, "metrics": metrics})
    runs, text, event = _shown_everywhere(tmp_path)
    row = event["runs"][0]
    assert row["tokens_per_s"] is None and row["peak_memory"] is None and row["duration_s"] is None


def test_the_runs_magic_lists_a_folder_with_bad_entries(tmp_path, capsys):
    from IPython.testing.globalipapp import get_ipython

    make_run(tmp_path, "odd", history=[{"loss": 1.0}, *GOOD_HISTORY], config=[1])
    ip = get_ipython()
    ip.run_line_magic("load_ext", "qlora_nb")
    try:
        ip.run_line_magic("qlora_runs", f"{tmp_path} -o listed")
        assert ip.user_ns["listed"]["odd"].status == "unreadable"
    finally:
        ip.run_line_magic("unload_ext", "qlora_nb")
        ip.user_ns.pop("listed", None)
    out = capsys.readouterr().out
    assert "looks like a bug" not in out and "entry 0 has no step" in out
