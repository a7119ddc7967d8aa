"""Bad input, table-driven, through every magic and its Python twin, in a real IPython shell.

Each case runs one cell after ``%load_ext qlora_nb`` and checks: a QloraError
shown as one paragraph (what, where, what is accepted) with no traceback, the
shell still running cells, and the notebook's namespace and session untouched.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qlora_nb.errors import QloraError

LONG = "x" * 600  # the tiny model's context window is 256 byte-level tokens


@dataclass
class Case:
    id: str
    cell: str
    expect: list[str]
    env: dict[str, str] = field(default_factory=dict)


def _cases() -> list[Case]:
    c = Case
    return [
        # ------------------------------------------------ flags and values out of range
        c("load-r-zero", "%qlora_load {tiny} --r 0", ["load option 'r'", "out of range", ">= 1"]),
        c("load-r-zero-twin", "qlora_nb.load({tiny!r}, r=0)", ["load option 'r'", "out of range", ">= 1"]),
        c("load-bits-5", "%qlora_load {tiny} --bits 5", ["load option 'bits'", "5", "4, 8, 16"]),
        c("load-bits-5-twin", "qlora_nb.load({tiny!r}, bits=5)", ["load option 'bits'", "4, 8, 16"]),
        c("load-dropout", "%qlora_load {tiny} --dropout 1.5", ["'dropout'", "out of range", "<= 0.99"]),
        c("load-quant-typo", "%qlora_load {tiny} --quant nf5", ["'quant'", "'nf5'", "nf4"]),
        c("load-unknown-option-twin", "qlora_nb.load({tiny!r}, rank=4)", ["unknown load option 'rank'"]),
        c("load-bad-name", "%qlora_load {tiny} --name 1abc", ["'1abc'", "not a valid Python name"]),
        c("train-max-steps", "%%qlora_train\ndata: {good}\nmax_steps: -2", ["train option 'max_steps'", ">= -1"]),
        c("train-max-steps-twin", "qlora.train(data={good!r}, max_steps=-2)", ["train option 'max_steps'", ">= -1"]),
        c("train-lr-text", "%%qlora_train\ndata: {good}\nlr: fast", ["'fast'", "learning_rate", "float"]),
        c("train-lr-zero-twin", "qlora.train(data={good!r}, learning_rate=0)", ["'learning_rate'", "> 0"]),
        c("train-optimizer", "%%qlora_train\ndata: {good}\noptimizer: adam8", ["'optimizer'", "adamw_8bit"]),
        c("train-unknown-key", "%%qlora_train\ndata: {good}\nmax_stepz: 3", ["unknown train option 'max_stepz'",
                                                                            "max_steps"]),
        c("train-unknown-key-twin", "qlora.train(data={good!r}, epoch=1)", ["unknown train option 'epoch'", "epochs"]),
        c("train-no-data", "%%qlora_train\nmax_steps: 2", ["train option 'data'", "no data"]),
        c("train-missing-var", "%%qlora_train\ndata: $no_such_df", ["no variable named 'no_such_df'"]),
        c("compare-max-new", '%qlora_compare "hi" --max-new-tokens 0', ["max_new_tokens", "out of range", ">= 1"]),
        c("compare-max-new-twin", 'qlora.compare("hi", max_new_tokens=0)', ["max_new_tokens", ">= 1"]),
        c("compare-top-p", '%qlora_compare "hi" --sample --top-p 2', ["top_p", "<= 1"]),
        c("compare-unknown-adapter", '%qlora_compare "hi" --adapters secnd', ["no adapter named 'secnd'",
                                                                              "default"]),
        c("generate-unknown-adapter-twin", 'qlora.generate("hi", adapter="secnd")', ["no adapter named 'secnd'"]),
        c("plan-r-zero", "%qlora_plan smollm2-135m --r 0", ["'r'", ">= 1"]),
        c("plan-r-zero-twin", "qlora_nb.plan('smollm2-135m', r=0)", ["'r'", ">= 1"]),
        c("plan-seq-len", "%qlora_plan smollm2-135m --seq-len 0", ["seq_len", ">= 1"]),
        c("plan-gpu", "%qlora_plan smollm2-135m --gpu 0GB", ["gpu"]),
        c("plan-unknown-model", "%qlora_plan lama-7b", ["'lama-7b'", "llama"]),
        c("merge-dtype", "%qlora_merge {tmp}/merged --dtype int3", ["dtype", "int3", "bf16"]),
        c("merge-dtype-twin", "qlora.merge({tmp!r} + '/merged', dtype='int3')", ["dtype", "int3", "bf16"]),
        c("merge-untrained-twin", "qlora.merge({tmp!r} + '/merged')", ["untrained", "Train it first"]),
        c("quant-report-sample", "%qlora_quant_report --sample 3", ["sample", "64"]),
        c("quant-report-sample-twin", "qlora.quant_report(sample=3)", ["sample", "64"]),
        c("quant-report-sample-text", "%qlora_quant_report --sample lots", ["--sample", "whole numbers"]),
        c("session-missing", "%qlora_ledger --session nope", ["no session named 'nope'", "%qlora_load"]),
        c("session-wrong-type", "%qlora_unload --session not_a_session", ["'not_a_session' is a int",
                                                                          "not a qlora_nb Session"]),
        c("unbalanced-quote", '%qlora_compare "hi', ["quote"]),
        # ------------------------------------------------ YAML bodies
        c("yaml-malformed", "%%qlora_train\ndata: [a, b\nmax_steps: 2", ["not valid YAML", "line"]),
        c("yaml-tabs", "%%qlora_train\ndata: x\n\tmax_steps: 2", ["not valid YAML"]),
        c("yaml-list", "%%qlora_train\n- data\n- x.jsonl", ["must be a mapping", "list"]),
        c("yaml-scalar", "%%qlora_train\njust some words", ["must be a mapping", "str"]),
        c("yaml-python-tag", "%%qlora_train\ndata: !!python/object/apply:os.system ['true']", ["not valid YAML"]),
        # ------------------------------------------------ files
        c("file-missing", "%%qlora_train\ndata: {tmp}/nope.jsonl", ["no data file", "nope.jsonl", ".jsonl"]),
        c("file-missing-twin", "qlora.train(data={tmp!r} + '/nope.csv')", ["no data file", "nope.csv"]),
        c("file-is-dir", "%%qlora_train\ndata: {tmp}/folder.jsonl", ["is a folder, not a data file", "folder.jsonl"]),
        c("file-not-utf8", "%%qlora_train\ndata: {tmp}/latin1.jsonl", ["latin1.jsonl", "not UTF-8"]),
        c("file-extension", "%%qlora_train\ndata: {tmp}/data.xlsx", ["data.xlsx", ".xlsx", ".parquet"]),
        c("jsonl-bad-line", "%%qlora_train\ndata: {tmp}/bad.jsonl", ["bad.jsonl, line 3", "not valid JSON"]),
        c("jsonl-bad-line-twin", "qlora.train(data={tmp!r} + '/bad.jsonl')", ["bad.jsonl, line 3"]),
        c("jsonl-not-object", "%%qlora_train\ndata: {tmp}/array_line.jsonl", ["line 2", "expected a JSON object"]),
        c("csv-missing-column", "%%qlora_train\ndata: {tmp}/cols.csv\ntemplate: '{{instruction}} {{output}}'",
          ["{{instruction}}", "match no column", "question, output"]),
        c("csv-missing-column-twin", "qlora.train(data={tmp!r} + '/cols.csv', template='Q: {{instruction}} A: {{output}}')",
          ["{{instruction}}", "question, output"]),
        c("csv-short-row", "%%qlora_train\ndata: {tmp}/short.csv", ["short.csv, line 3", "'completion'", "missing"]),
        c("csv-unknown-layout", "%%qlora_train\ndata: {tmp}/cols.csv", ["not a known layout", "question, output",
                                                                         "template"]),
        c("parquet-wrong-columns", "%%qlora_train\ndata: {tmp}/wrong.parquet", ["not a known layout", "a, b"]),
        c("parquet-wrong-types", "%%qlora_train\ndata: {tmp}/types.parquet", ["row 1", "'prompt'", "not text"]),
        c("parquet-not-parquet", "%%qlora_train\ndata: {tmp}/fake.parquet", ["fake.parquet", "parquet"]),
        c("empty-jsonl", "%%qlora_train\ndata: {tmp}/empty.jsonl", ["no rows"]),
        c("empty-list-twin", "qlora.train(data=[])", ["no rows"]),
        c("empty-df-var", "%%qlora_train\ndata: $empty_df", ["no rows"]),
        c("non-text-field", "%%qlora_train\ndata: {tmp}/nontext.jsonl", ["nontext.jsonl, line 2", "'prompt'",
                                                                          "not text"]),
        c("null-field", "%%qlora_train\ndata: {tmp}/nullfield.jsonl", ["line 1", "'completion'", "None"]),
        c("non-text-df-twin", "qlora.train(data=num_df)", ["DataFrame, row 0", "'prompt'", "a number", "astype(str)"]),
        c("template-missing-field", "%%qlora_train\ndata: {good}\ntemplate: 'Q: {{question}} A: {{output}}'",
          ["{{question}}", "match no column", "prompt, completion"]),
        c("template-no-output", "%%qlora_train\ndata: {good}\ntemplate: 'Q: {{prompt}}'", ["{{output}}"]),
        c("template-bad-format", "%%qlora_train\ndata: {good}\ntemplate: 'Q: {{prompt {{output}}'", ["template"]),
        # ------------------------------------------------ models and adapters
        c("unknown-alias", "%qlora_load smollm3-135m", ["unknown model alias 'smollm3-135m'", "smollm2-135m"]),
        c("unknown-alias-twin", "qlora_nb.load('smolm2')", ["unknown model alias 'smolm2'", "smollm2-135m"]),
        c("missing-path", "%qlora_load ./no/such/model", ["does not exist", "no/such/model"]),
        c("dir-without-config", "%qlora_load {tmp}/folder.jsonl", ["no config.json"]),
        c("hub-offline", "%qlora_load some-org/some-model", ["'some-org/some-model'", "HF_HUB_OFFLINE",
                                                             "smollm2-135m"], env={"HF_HUB_OFFLINE": "1"}),
        c("hub-offline-twin", "qlora_nb.load('some-org/some-model')", ["HF_HUB_OFFLINE", ".gguf"],
          env={"HF_HUB_OFFLINE": "1"}),
        c("adapter-missing", "%qlora_load_adapter {tmp}/no_adapter", ["no_adapter", "does not exist"]),
        c("adapter-missing-twin", "qlora.load_adapter({tmp!r} + '/no_adapter')", ["does not exist"]),
        c("adapter-not-adapter", "%qlora_load_adapter {tmp}/folder.jsonl", ["adapter_config.json"]),
        c("adapter-is-file", "%qlora_load_adapter {good}", ["is a file, not an adapter folder"]),
        c("load-with-wrong-adapter", "%qlora_load {tiny} --adapter {tmp}/no_adapter", ["no_adapter",
                                                                                       "does not exist"]),
        c("save-non-empty", "%qlora_save {tmp}/full", ["already exists", "--overwrite"]),
        c("save-non-empty-twin", "qlora.save({tmp!r} + '/full')", ["already exists", "overwrite"]),
        c("export-non-empty", "%qlora_export {tmp}/full --data {good}", ["already exists", "overwrite"]),
        c("export-non-empty-twin", "qlora.export({tmp!r} + '/full', data={good!r})", ["already exists", "overwrite"]),
        # ------------------------------------------------ prompts
        c("prompt-too-long", f'%qlora_compare "{LONG}"', ["tokens", "256"]),
        c("prompt-too-long-twin", f'qlora.compare("{LONG}")', ["tokens", "256"]),
        c("prompt-too-long-generate", f'qlora.generate("{LONG}")', ["tokens", "256"]),
        c("prompt-empty", '%qlora_compare ""', ["empty"]),
    ]


CASES = _cases()


def _write_files(tmp: Path) -> dict[str, str]:
    import pandas as pd

    good = [{"prompt": f"Say {i}", "completion": f"{i}"} for i in range(6)]
    (tmp / "good.jsonl").write_text("\n".join(json.dumps(r) for r in good) + "\n")
    (tmp / "bad.jsonl").write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": "d"}\n'
                                   '{"prompt": "e", "completion": }\n')
    (tmp / "array_line.jsonl").write_text('{"prompt": "a", "completion": "b"}\n["a", "b"]\n')
    (tmp / "cols.csv").write_text("question,output\nWhat?,This.\nWhy?,Because.\n")
    (tmp / "short.csv").write_text("prompt,completion\na,b\nc\n")
    (tmp / "empty.jsonl").write_text("")
    (tmp / "latin1.jsonl").write_bytes('{"prompt": "caf\xe9", "completion": "x"}\n'.encode("latin-1"))
    (tmp / "data.xlsx").write_bytes(b"PK\x03\x04")
    (tmp / "fake.parquet").write_text("not parquet at all")
    (tmp / "nontext.jsonl").write_text('{"prompt": "a", "completion": "b"}\n{"prompt": {"x": 1}, "completion": "b"}\n')
    (tmp / "nullfield.jsonl").write_text('{"prompt": "a", "completion": null}\n')
    (tmp / "folder.jsonl").mkdir()
    (tmp / "full").mkdir()
    (tmp / "full" / "keep.txt").write_text("user file")
    pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5]}).to_parquet(tmp / "wrong.parquet")
    pd.DataFrame({"prompt": [1, 2], "completion": ["x", "y"]}).to_parquet(tmp / "types.parquet")
    return {"tmp": str(tmp), "good": str(tmp / "good.jsonl")}


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model_dir):
    import pandas as pd
    from IPython.testing import globalipapp

    import qlora_nb

    tmp = tmp_path_factory.mktemp("bad_input")
    paths = _write_files(tmp)
    paths["tiny"] = str(tiny_model_dir)
    ip = globalipapp.start_ipython() or globalipapp.get_ipython()  # start_ipython returns None once started
    ip.run_line_magic("load_ext", "qlora_nb")
    session = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0)
    ip.user_ns.update(qlora_nb=qlora_nb, qlora=session, not_a_session=5, empty_df=pd.DataFrame(),
                      num_df=pd.DataFrame({"prompt": [1.5, 2.0], "completion": ["a", "b"]}))
    yield ip, paths
    ip.run_line_magic("unload_ext", "qlora_nb")
    for k in ("qlora", "qlora_nb", "not_a_session", "empty_df", "num_df"):
        ip.user_ns.pop(k, None)


_SHELL_NAMES = {"In", "Out", "exit", "quit", "get_ipython"}


def _snapshot(ip) -> dict:
    """What a failed cell must leave as it was: visible names (by identity) and the session's state."""
    ns = {k: id(v) for k, v in ip.user_ns.items() if not k.startswith("_") and k not in _SHELL_NAMES}
    s = ip.user_ns["qlora"]
    trainable = [p for p in s.model.parameters() if p.requires_grad]
    return {"ns": ns, "adapters": {k: dict(v) for k, v in s.adapters.items()}, "runs": len(s.runs),
            "config": s.config.to_dict(), "active": s.active_adapter, "training": s.model.training,
            "weights": [float(p.detach().double().sum()) for p in trainable[:4]], "model": id(s.model),
            "template": str(getattr(s, "template", None)), "val_rows": id(getattr(s, "val_rows", None)),
            "optimizer": id(s.optimizer)}


def run_cell(ip, cell: str) -> tuple[object, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        result = ip.run_cell(cell, store_history=True)
    return result, buf.getvalue()


def check_one_paragraph(out: str, expect: list[str]) -> str:
    lines = [ln for ln in out.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("QloraError:", "QloraOOMError:"))]
    assert len(errors) == 1, out
    text = errors[0]
    for bad in ("Traceback", "File \"", "----> ", "site-packages"):
        assert bad not in out, out
    for e in expect:
        assert e in text, f"expected {e!r} in: {text}"
    return text


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_case(env, case, monkeypatch):
    ip, paths = env
    for k, v in case.env.items():
        monkeypatch.setenv(k, v)
    before = _snapshot(ip)
    result, out = run_cell(ip, case.cell.format(**paths))
    assert isinstance(result.error_in_exec, QloraError), f"{type(result.error_in_exec).__name__}: {out}"
    check_one_paragraph(out, [e.format(**paths) for e in case.expect])
    alive, _ = run_cell(ip, "40 + 2")
    assert alive.success and alive.result == 42
    assert _snapshot(ip) == before


def test_every_magic_refuses_an_unknown_flag(env):
    """The flag part of the table, generated for every registered magic so a new magic cannot skip it."""
    ip, _ = env
    mm = ip.magics_manager.magics
    names = [("line", n) for n in mm["line"] if n.startswith("qlora")] + \
            [("cell", n) for n in mm["cell"] if n.startswith("qlora")]
    expected = {"qlora_load", "qlora_load_adapter", "qlora_ledger", "qlora_unload", "qlora_train", "qlora_compare",
                "qlora_plan", "qlora_quant_report", "qlora_save", "qlora_merge", "qlora_export"}
    assert expected <= {n for _, n in names}, expected - {n for _, n in names}
    before = _snapshot(ip)
    for kind, name in names:
        cell = f"%{name} --no-such-flag" if kind == "line" else f"%%{name} --no-such-flag\ndata: x.jsonl"
        result, out = run_cell(ip, cell)
        assert isinstance(result.error_in_exec, QloraError), (name, out)
        text = check_one_paragraph(out, [f"%{name}"])
        assert "--no-such-flag" in text or "required" in text, text
    assert _snapshot(ip) == before


def test_debug_flag_shows_the_traceback(env):
    ip, paths = env
    _, out = run_cell(ip, "%qlora_load smollm3-135m --debug")
    assert "Traceback" in out and "resolve_model" in out and "unknown model alias" in out
    _, out = run_cell(ip, "%qlora_load smollm3-135m")
    assert "Traceback" not in out


def test_debug_env_shows_tracebacks_for_python_twins(env, monkeypatch):
    ip, _ = env
    monkeypatch.setenv("QLORA_NB_DEBUG", "1")
    _, out = run_cell(ip, "qlora_nb.load('smolm2')")
    assert "Traceback" in out and "resolve_model" in out
    monkeypatch.delenv("QLORA_NB_DEBUG")
    _, out = run_cell(ip, "qlora_nb.load('smolm2')")
    assert "Traceback" not in out and out.strip().startswith("QloraError: MODEL: unknown model alias")


def test_internal_errors_become_one_paragraph(env, monkeypatch):
    """A library error inside a magic is one paragraph pointing at --debug, with no frames kept alive."""
    import qlora_nb.engine.session as session_mod

    ip, paths = env

    def boom(*a, **k):
        raise ValueError("something deep\nin a library")

    monkeypatch.setattr(session_mod, "load", boom)
    result, out = run_cell(ip, f"%qlora_load {paths['tiny']}")
    text = check_one_paragraph(out, ["%qlora_load", "ValueError: something deep", "--debug"])
    assert "in a library" not in text
    assert result.error_in_exec.__context__ is None and result.error_in_exec.__cause__ is None
    result, out = run_cell(ip, f"%qlora_load {paths['tiny']} --debug")
    assert isinstance(result.error_in_exec, ValueError) and "Traceback" in out


def test_failed_load_keeps_the_existing_session(env):
    ip, paths = env
    s = ip.user_ns["qlora"]
    result, out = run_cell(ip, f"%qlora_load {paths['tiny']} --adapter {paths['tmp']}/no_adapter --quiet")
    assert not result.success
    assert ip.user_ns["qlora"] is s and s.model is not None
    result, out = run_cell(ip, f"%qlora_load {paths['tiny']} --r 2 --quiet --name other")
    assert result.success, out
    assert ip.user_ns["qlora"] is s and ip.user_ns.pop("other") is not s


def test_unreadable_file_is_named(tmp_path, monkeypatch):
    from qlora_nb.data.load import load_data

    p = tmp_path / "locked.jsonl"
    p.write_text('{"prompt": "a", "completion": "b"}\n')
    real = Path.read_text

    def denied(self, *a, **k):
        if self.name == "locked.jsonl":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(QloraError, match="locked.jsonl.*(permission|Permission)"):
        load_data(str(p))


def test_date_and_number_like_text_stays_as_written(tmp_path, tiny_session):
    """CSV, JSONL, YAML body and DataFrame-of-str fields reach the prompt character for character."""
    import pandas as pd

    from qlora_nb.data.load import load_data
    from qlora_nb.data.validate import validate
    from qlora_nb.magics.base import parse_yaml_body

    written = ["007", "2024-01-02", "1.50", "1e5", "0x1F", "NaN", "null", "True", "12:30", "+1", "1_000", " 3 "]
    csv = tmp_path / "t.csv"
    csv.write_text("prompt,output\n" + "\n".join(f'"{w}",ok' for w in written) + "\n")
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("\n".join(json.dumps({"prompt": w, "output": "ok"}) for w in written) + "\n"
                     + '{"prompt": "n", "output": 1.50}\n')
    df = pd.DataFrame({"prompt": written, "output": ["ok"] * len(written)}, dtype=str)
    tpl = "P: {prompt} {output}"
    for source in (str(csv), str(jsonl), df):
        rows = validate(load_data(source), tpl, tiny_session.tokenizer)
        prompts = [rows.template.prompt(r) for r in rows.rows][: len(written)]
        assert prompts == [f"P: {w} " for w in written], source
    last = validate(load_data(str(jsonl)), tpl, tiny_session.tokenizer).rows[-1]
    assert last["output"] == "1.50"  # a JSON number keeps its literal text
    body = parse_yaml_body("run_name: 007\nprobes: [2024-01-02, 1.50, 1e5, no, 0x1F]\ntemplate: 'Q: {q} {output}'",
                           "qlora_train")
    assert body == {"run_name": "007", "probes": ["2024-01-02", "1.50", "1e5", "no", "0x1F"],
                    "template": "Q: {q} {output}"}


def test_rows_longer_than_cutoff_are_truncated_and_counted(env, tmp_path):
    """Not an error: training goes on, and the count of truncated rows is reported (result and output)."""
    ip, paths = env
    rows = [{"prompt": "short", "completion": "ok"}] + [{"prompt": "long " * 20, "completion": "yes"}] * 3
    ip.user_ns["rows_long"] = rows
    out_dir = tmp_path / "run"
    result, out = run_cell(ip, f"%%qlora_train -o res_trunc\ndata: $rows_long\ncutoff_len: 16\nmax_steps: 1\n"
                               f"val_split: 0\noutput_dir: {out_dir}\nbatch_size: 2")
    assert result.success, out
    res = ip.user_ns.pop("res_trunc")
    assert res.truncated_rows == 3
    assert re.search(r"3\D[^\n]*truncat|truncat[^\n]*\D3\b", out), out
    ip.user_ns.pop("rows_long")


def test_kernel_shows_one_paragraph_and_stays_alive():
    """In a real ipykernel the error reaches the front end as one line (ename/evalue), and the kernel lives."""
    from jupyter_client.manager import start_new_kernel

    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    km, kc = start_new_kernel(kernel_name="python3", cwd=root, env=env)
    try:
        def execute(code):
            msg_id = kc.execute(code)
            errors, outputs = [], []
            while True:
                msg = kc.get_iopub_msg(timeout=60)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] == "error":
                    errors.append(msg["content"])
                elif msg["msg_type"] in ("stream", "execute_result"):
                    outputs.append(msg["content"])
                elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    break
            while True:
                reply = kc.get_shell_msg(timeout=60)
                if reply["parent_header"].get("msg_id") == msg_id:
                    return reply["content"]["status"], errors, outputs

        assert execute("%load_ext qlora_nb")[0] == "ok"
        status, errors, outputs = execute("%qlora_load smollm3-135m")
        assert status == "error" and len(errors) == 1, (status, errors, outputs)
        err = errors[0]
        assert err["ename"] == "QloraError" and "unknown model alias" in err["evalue"]
        assert len(err["traceback"]) == 1 and "Traceback" not in err["traceback"][0]
        status, errors, outputs = execute("6 * 7")
        assert status == "ok" and not errors and outputs[0]["data"]["text/plain"] == "42"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
