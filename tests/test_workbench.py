"""The studio and the playground without a browser: what a click does, on a tiny random model (CPU, seconds).

The browser tests (test_browser_workbench.py) check the same flows through JupyterLab; these pin the Python
side: options generated from TrainConfig, the preview equal to training's tokenization, Train/Stop/Resume from a
checkpoint, the copied cell reproducing the configuration in a fresh shell, and streamed columns from one model.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from types import SimpleNamespace

import qlora_nb
from qlora_nb.config import TrainConfig

ROWS = [{"q": f"{i} plus {i % 5}", "output": f"{i + i % 5}" * (1 + i % 3)} for i in range(24)]
TEMPLATE = "Q: {q}\nA: {output}"


def _studio(session, **kw):
    from qlora_nb.views.studio import Studio

    return Studio(session, user_ns=kw.pop("user_ns", {"rows": ROWS}), **kw)


def _set(studio, **values):
    studio.values = {**studio.values, **{k: str(v) if not isinstance(v, bool) else v for k, v in values.items()}}


def _perturb(session, std=0.5):
    import torch

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in session.model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=gen) * std)


# ------------------------------------------------------------------ options
def test_options_come_from_train_config_metadata():
    from qlora_nb.views.workbench import OPTIONS, option_specs

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    specs = {s["name"]: s for s in option_specs()}
    assert list(specs) == list(OPTIONS)
    for name, s in specs.items():
        assert s["default"] == fields[name].default and s["help"] == fields[name].metadata["help"]
    assert specs["optimizer"]["kind"] == "choice" and "paged_adamw_8bit" in specs["optimizer"]["choices"]
    assert specs["max_steps"]["kind"] == "int" and specs["learning_rate"]["kind"] == "float"
    assert specs["packing"]["kind"] == "bool" and specs["eval_steps"]["optional"]


def test_bad_option_is_named_inline_and_blocks_train(tiny_session):
    st = _studio(tiny_session, data="rows")
    st.template = TEMPLATE
    _set(st, batch_size="four", learning_rate=-1)
    assert set(st.field_errors) == {"batch_size", "learning_rate"}
    assert "batch_size" in st.field_errors["batch_size"] and "expected int" in st.field_errors["batch_size"]
    assert st.train() is None and st.status == "error"
    assert st.error.startswith("train option 'learning_rate': -1.0 is out of range")
    _set(st, batch_size=4, learning_rate=1e-3)
    assert st.field_errors == {}


# ------------------------------------------------------------------ data preview
def test_preview_is_what_training_tokenizes(tiny_session):
    from qlora_nb.data.collate import tokenize_rows
    from qlora_nb.data.template import Template

    st = _studio(tiny_session, data="rows")
    st.template = TEMPLATE
    p = st.preview
    # the split training makes (val_split 0.1 of 24 rows: 2 held out), not every row as training rows
    assert (p["n_rows"], p["n_val"]) == (22, 2) and len(p["rows"]) == 3 and st.data_error == ""
    ex = tokenize_rows(ROWS[:1], Template.parse(TEMPLATE), tiny_session.tokenizer, 256).examples[0]
    row = p["rows"][0]
    assert row["learned"] == [label != -100 for label in ex["labels"]]
    assert "".join(row["pieces"]) == tiny_session.tokenizer.decode(ex["input_ids"], skip_special_tokens=True)
    assert row["prompt_tokens"] == ex["labels"].count(-100) and row["completion_tokens"] > 0
    # a small cutoff truncates rows; counted without re-reading the data
    loaded = st._preview
    _set(st, cutoff_len=16)
    assert st._preview is loaded and st.preview["truncated"] == sum(n > 16 for n in loaded.lengths) > 0
    assert "longer than cutoff_len=16" in st.text()


def test_bad_row_is_named_inline(tiny_session, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"q": "1", "output": "2"}) + "\n" + json.dumps({"q": "3"}) + "\n", encoding="utf-8")
    st = _studio(tiny_session, data=str(path))
    st.template = TEMPLATE
    assert st.preview == {} and "line 2" in st.data_error and "output" in st.data_error, st.data_error
    st.data = "$nothing_here"
    assert "no variable named 'nothing_here'" in st.data_error


def test_forecast_follows_options_and_says_wont_fit(tiny_session):
    st = _studio(tiny_session, data="rows")
    st.template = TEMPLATE
    small = st.forecast["total"]
    assert st.forecast["verdict"] == "fits" and st.forecast["limit_bytes"] > 0
    _set(st, batch_size=64)
    assert st.forecast["total"] > small
    _set(st, batch_size=2**16, cutoff_len=4096)  # the largest batch the planner takes (PLAN_MAX_BATCH)
    st.template = "{q}{output}" + " pad" * 3000  # rows as long as the cutoff: the forecast uses the longest row
    assert st.forecast["verdict"] != "fits", st.forecast
    _set(st, batch_size=10**7)  # beyond it: the forecast names the option instead of planning petabytes
    assert "verdict" not in st.forecast and "batch_size" in str(st.forecast), st.forecast


# ------------------------------------------------------------------ train / stop / resume
def test_train_stop_resume_continues_from_the_checkpoint(tiny_session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = {"rows": ROWS}
    st = _studio(tiny_session, data="rows", user_ns=ns)
    st.template = TEMPLATE
    _set(st, max_steps=6, batch_size=4, cutoff_len=64, val_split=0)

    def click_stop_at_2(event):  # what the dashboard's Stop does from its subshell: only a flag
        if event.get("kind") == "step" and event.get("step") == 2:
            st.stop()

    off = tiny_session.events.subscribe(click_stop_at_2)
    first = st.train()
    off()
    assert st.status == "stopped" and st.can_resume and first.interrupted
    ckpt = st.run["checkpoint_step"]  # the step boundary after the click (the flag is read at step end)
    assert 2 <= ckpt < 6 and f"stopped at step {ckpt}" in st.message and first.metrics["steps"] == ckpt
    assert ns["train_result"] is first and st.dashboard is not None and st.dashboard_id
    from qlora_nb.views.playground import Playground

    pg = Playground(tiny_session)  # during the training pause: generation leaves the run resumable
    pg.options = {**pg.options, "max_new_tokens": "4"}
    assert pg.generate("Q: 1 plus 1") is not None and pg.columns == ["base", "default"], pg.error
    done = st.train(resume=True)
    assert st.status == "done" and not st.can_resume
    assert st.run["resumed_from"] == ckpt and st.run["first_step"] == ckpt + 1 and done.metrics["steps"] == 6
    assert st.dashboard.steps == list(range(1, 7))  # the resumed curve continues the stopped one
    tiny_session.load_adapter(done.adapter_dir, name="again")  # %qlora_load_adapter: a new column, no reload
    pg.generate("Q: 1 plus 1")
    assert pg.available == ["default", "again"] and pg.columns == ["base", "default", "again"]


def test_engine_error_is_one_paragraph(tiny_session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    st = _studio(tiny_session, data="rows")
    st.template = TEMPLATE
    _set(st, max_steps=2, val_split=30)  # holds out every row: the engine refuses before training
    assert st.train() is None and st.status == "error"
    assert st.error.startswith("train option 'val_split'") and "Traceback" not in st.error
    assert st.train(resume=True) is None and "nothing to resume" in st.error


def test_copied_cell_reproduces_the_configuration_in_a_fresh_shell(tiny_session):
    from IPython.core.interactiveshell import InteractiveShell

    st = _studio(tiny_session, data="rows", session_name="sess")
    st.template = TEMPLATE
    _set(st, max_steps=7, learning_rate=3e-4, optimizer="adamw_8bit", packing=True, eval_steps=3, val_split=0.25)
    cell = st.to_code()
    assert cell == st.code and cell.startswith("%%qlora_train -o train_result --session sess\ndata: $rows\n")
    shell = InteractiveShell()  # a fresh shell: only the extension, the session and the data variable
    captured = {}

    def record(**options):  # what %%qlora_train hands the engine; no need to train for that
        captured.update(options)
        return SimpleNamespace(truncated_rows=0, metrics={}, note="")

    try:
        shell.run_line_magic("load_ext", "qlora_nb")
        tiny_session.train = record
        shell.user_ns.update(sess=tiny_session, rows=ROWS)
        line, body = cell.split("\n", 1)
        shell.run_cell_magic("qlora_train", line.split(" ", 1)[1], body)  # the exact cell, as pasted
    finally:
        del tiny_session.train
        InteractiveShell.clear_instance()
    assert isinstance(shell.user_ns["train_result"], SimpleNamespace)
    assert TrainConfig.from_options(captured) == st.config()


# ------------------------------------------------------------------ playground
def test_playground_streams_every_column_from_one_model(tiny_session):
    from qlora_nb.views.playground import Playground

    pg = Playground(tiny_session)
    pg.generate("Q: 3 plus 3")
    assert pg.columns == ["base"] and pg.notes and "not been trained" in pg.notes[0]
    _perturb(tiny_session)
    ptrs = {n: p.data_ptr() for n, p in tiny_session.model.named_parameters()}
    grads = {n: p.requires_grad for n, p in tiny_session.model.named_parameters()}
    events = []
    off = tiny_session.events.subscribe(events.append)
    pg.options = {**pg.options, "max_new_tokens": "8", "logprobs": True}
    result = pg.generate("Q: 3 plus 3")
    off()
    assert pg.status == "done" and pg.columns == ["base", "default"] and pg.history == ["Q: 3 plus 3"]
    tokens = [e for e in events if e["kind"] == "stream_token"]
    assert {e["column"] for e in tokens} == {"base", "default"}
    order = [e["column"] for e in tokens]  # the columns fill together: the adapter starts before the base ends
    assert order.index("default") < len(order) - 1 - order[::-1].index("base")
    assert max(e["n_tokens"] for e in tokens if e["column"] == "base") == pg.cells["base"]["n_tokens"] > 1
    ad = pg.cells["default"]
    assert ad["changed"] and any(ad["diff"]) and ad["tokens_per_s"] > 0 and ad["mean_logprob"] < 0
    assert "".join(ad["tokens"]) == ad["text"]
    # the same tensors served both columns, and peft's flags are back as they were
    assert {n: p.data_ptr() for n, p in tiny_session.model.named_parameters()} == ptrs
    assert {n: p.requires_grad for n, p in tiny_session.model.named_parameters()} == grads
    assert "DEFAULT" in pg._repr_mimebundle_()[0]["text/plain"] and result.cells["base"]["n_tokens"] > 1


def test_playground_error_is_shown_not_raised(tiny_session):
    from qlora_nb.views.playground import Playground

    pg = Playground(tiny_session)
    assert pg.generate("   ") is None and pg.status == "error" and pg.error.startswith("prompt: the prompt is empty")
    pg.prompt = "Q: 2 plus 2"  # editing the prompt retires the message about the old one
    assert pg.error == "" and pg.status == "idle"
    pg.options = {**pg.options, "max_new_tokens": "-3"}  # a bad value is named as it is typed, not at Generate
    assert "generation option 'max_new_tokens'" in pg.error
    assert pg.generate() is None and "max_new_tokens" in pg.error and not pg.columns
    pg.prompt = "Q: 2 plus 3"
    assert "max_new_tokens" in pg.error  # still invalid: editing the prompt does not hide it
    pg.options = {**pg.options, "max_new_tokens": "4"}
    assert pg.error == ""


# ------------------------------------------------------------------ magics, twins, layering
def test_magics_and_python_twins(tiny_session):
    from IPython.core.interactiveshell import InteractiveShell

    from qlora_nb.views.playground import Playground
    from qlora_nb.views.studio import Studio

    shell = InteractiveShell()
    try:
        shell.run_line_magic("load_ext", "qlora_nb")
        shell.user_ns.update(qlora=tiny_session, rows=ROWS)
        shell.run_line_magic("qlora_studio", "$rows")
        shell.run_line_magic("qlora_playground", '"Q: 1 plus 1"')
        assert isinstance(shell.user_ns["studio"], Studio) and shell.user_ns["studio"].data == "$rows"
        assert shell.user_ns["playground"].prompt == "Q: 1 plus 1"
    finally:
        InteractiveShell.clear_instance()
    assert "data: $rows\n" in qlora_nb.studio(tiny_session, data=ROWS, user_ns={"rows": ROWS}).to_code()
    assert isinstance(qlora_nb.playground(tiny_session, chat=False), Playground)


def test_engine_does_not_import_the_workbench_views():
    root = Path(qlora_nb.__file__).parent
    upward = re.compile(r"(from|import)\s+[.\w]*\b(widgets|views|magics)\b")
    for path in (root / "engine" / "generation" / "stream.py", root / "data" / "preview.py"):
        assert not upward.search(path.read_text(encoding="utf-8")), path


def test_without_subshells_the_kernel_interrupt_stops_a_studio_run(tiny_session, tmp_path, monkeypatch):
    """ipykernel < 7 (no subshells): the panel says Stop needs the Interrupt, and the Interrupt (SIGINT on the
    main thread, where a Train click runs) stops at a step boundary with a checkpoint that Resume continues."""
    import signal

    from qlora_nb.views import kernel_comm

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(kernel_comm, "current_kernel", lambda: SimpleNamespace())  # a kernel without subshells
    st = _studio(tiny_session, data="rows")
    st.template = TEMPLATE
    _set(st, max_steps=5, batch_size=4, cutoff_len=64, val_split=0)
    assert st.in_kernel

    def interrupt_at_2(event):
        if event.get("kind") == "step" and event.get("step") == 2:
            signal.raise_signal(signal.SIGINT)  # what the kernel's ■ Interrupt delivers

    off = tiny_session.events.subscribe(interrupt_at_2)
    st.train()
    off()
    assert not st.stop_live and "interrupt" in st.dashboard.message.lower()
    assert st.status == "stopped" and st.can_resume and st.run["checkpoint_step"] >= 2
    st.train(resume=True)
    assert st.status == "done" and st.run["first_step"] == st.run["resumed_from"] + 1


def test_copied_cell_writes_whole_floats_as_typed():
    """``epochs: 2`` typed in the studio is copied as ``epochs: 2``, not ``2.0``, and reads back as the same option."""
    import yaml

    from qlora_nb.views.workbench import yaml_value

    assert yaml_value(2.0) == "2" and yaml_value(0.5) == "0.5" and yaml_value(2e-4) == "0.0002"
    back = TrainConfig.from_options({"data": "demo", "epochs": yaml.safe_load(yaml_value(2.0))})
    assert back.epochs == 2.0 and isinstance(back.epochs, float)


def test_saved_copy_is_the_last_state(tiny_session, monkeypatch):
    """Issue 25 (browser review): the fallback saved in the notebook is rewritten when a widget settles (done,
    stopped, error), so a reopened notebook shows the generations, not the empty panel first displayed."""
    import IPython.display

    from qlora_nb.views.playground import Playground

    published: list[dict] = []
    monkeypatch.setattr(IPython.display, "publish_display_data",
                        lambda data, **kw: published.append({"data": data, **kw}))
    pg = Playground(tiny_session)
    pg._fallback_id = "fallback-1"  # as when displayed in a kernel
    pg.generate("Q: 3 plus 3")
    assert pg.status == "done" and published, "no fallback update after Generate"
    last = published[-1]
    assert last["transient"] == {"display_id": "fallback-1"} and last["update"] is True
    assert "Q: 3 plus 3" in last["data"]["text/plain"] and last["data"]["text/plain"] == pg.text()
