"""One declaration per concept (issue 22): every magic flag is generated from one, shared concepts cannot drift,
``%qlora_plan``'s defaults forecast a default ``%%qlora_train``, and the widgets take their choices from Python."""

from __future__ import annotations

import dataclasses
import re
from types import SimpleNamespace

import pytest

from qlora_nb import command_options as CO
from qlora_nb import config as C
from qlora_nb.errors import QloraError
from qlora_nb.magics import magic_classes
from qlora_nb.magics.base import parse_args
from qlora_nb.magics.flags import MagicFlags, options_from_args
from qlora_nb.options import Concept, OptionsBase, option_specs
from qlora_nb.views.base import esm

# Flags that are written by hand, and why. Keep it short: anything that is an option of the work belongs in a
# declaration in qlora_nb/config.py (or MagicFlags, for where a result goes).
HAND_WRITTEN = {
    ("qlora_load", "--name"): "the variable the Session is bound to; the twin qlora_nb.load returns it instead",
    ("qlora_load_adapter", "--name"): "the adapter's name in the session (Session.load_adapter's name=)",
    ("qlora_compare", "--greedy"): "a second spelling of GenerateConfig's --no-sample",
    ("qlora_compare", "--data"): "where the prompts come from (validation rows); the twin takes the prompts",
    ("qlora_compare", "--n"): "how many rows --data takes",
    ("qlora_plan", "--text"): "print instead of showing the widget; the twin returns the Plan",
    ("qlora_playground", "--chat"): "with --completion, a three-way mode (the twin's chat=True/False/None)",
    ("qlora_playground", "--completion"): "with --chat, a three-way mode (the twin's chat=True/False/None)",
    ("qlora_runs", "--compare"): "which runs to line up (the twin: qlora_nb.runs(folder).compare(*names))",
    ("qlora_plan", "--measure"): "times real steps of the loaded session (Session.plan's measure=), not a setting",
    ("qlora_plan", "--gpu-model"): "which GPU's published peak prices the time (plan's gpu_model=), not a setting",
}

OPTION_CLASSES = [C.LoadConfig, C.TrainConfig, C.PlanConfig, C.GenerateConfig, CO.SaveOptions, CO.MergeOptions,
                  CO.LaunchOptions, CO.PlaygroundOptions, CO.ExportOptions, CO.QuantReportOptions, MagicFlags]

# One name in several classes that means different things there, and why.
DISTINCT = {
    "seed": "LoRA initialisation (load), data order and dropout (train), sampling noise (generate)",
    "device": "where the model runs (load) vs whose memory the plan forecasts (plan: cuda or cpu)",
    "adapter": "a saved folder to load (load) vs the name of an adapter in the session (save, merge)",
    "data": "rows or a path to train on (train) vs the data file an exported script copies (export)",
    "sample": "sampling instead of greedy decoding (generate) vs how many values per weight the report quantizes",
    "bits": "the base's storage (load) vs an override of the method's storage (plan: default from method)",
    "fsdp": "shard this launch's model (launch) vs which accelerate config the exported README runs (export)",
    "format": "what an adapter is written as (save: peft, gguf) vs what a merged model is (merge: hf, gguf, ollama)",
}


def _magics():
    for cls in magic_classes():
        for kind in ("line", "cell"):
            for name, meth in cls.magics.get(kind, {}).items():
                yield name, getattr(cls, meth)


def test_every_magic_flag_is_generated_from_a_declaration():
    used = set()
    for name, func in _magics():
        generated = getattr(func, "__qlora_flags__", {})
        for action in func.parser._actions:
            for flag in action.option_strings:
                if flag in ("-h", "--help"):
                    continue
                if flag in generated:
                    continue
                assert (name, flag) in HAND_WRITTEN, f"%{name} {flag} is written by hand: declare it"
                used.add((name, flag))
    assert used == set(HAND_WRITTEN), f"stale allow-list entries: {set(HAND_WRITTEN) - used}"


def test_shared_flags_have_one_help_everywhere():
    helps: dict[str, set[str]] = {}
    for _, func in _magics():
        for action in func.parser._actions:
            if action.option_strings and action.option_strings[0] in ("--session", "--force", "--overwrite",
                                                                      "--quiet"):
                helps.setdefault(action.option_strings[0], set()).add(action.help)
    assert set(helps) == {"--session", "--force", "--overwrite", "--quiet"}
    assert all(len(h) == 1 for h in helps.values()), helps
    overwrite = next(iter(helps["--overwrite"]))
    assert "non-empty" not in overwrite and "qlora_nb wrote" in overwrite and "never replaced" in overwrite
    assert "Default: qlora" in next(iter(helps["--session"]))


def test_one_name_means_one_concept():
    by_name: dict[str, list[tuple[type, dataclasses.Field]]] = {}
    for cls in OPTION_CLASSES:
        for f in dataclasses.fields(cls):
            for spelling in (f.name, *f.metadata.get("aliases", ())):
                by_name.setdefault(spelling, []).append((cls, f))
    for spelling, uses in by_name.items():
        canon = {f.name for _, f in uses}
        if len(uses) < 2 or spelling in DISTINCT:
            continue
        if canon == {"seq_len", "cutoff_len"}:  # one concept, two names (see the CUTOFF_LEN comment in config)
            assert len({(f.default, f.metadata["help"]) for _, f in uses}) == 1, spelling
            continue
        concepts = {id(f.metadata.get("concept")) for _, f in uses}
        where = [f"{cls.__name__}.{f.name}" for cls, f in uses]
        assert len(canon) == 1 and len(concepts) == 1 and uses[0][1].metadata.get("concept") is not None, \
            f"{spelling!r} is declared more than once: {where}"


def test_a_concept_under_another_name_is_refused():
    with pytest.raises(TypeError, match="rank uses the concept 'r'"):
        @dataclasses.dataclass
        class Bad(OptionsBase):
            rank: int = C.LORA_R()


def test_plan_defaults_forecast_a_default_training_run():
    plan, load, train = C.PlanConfig(), C.LoadConfig(), C.TrainConfig(data="demo")
    assert (plan.batch_size, plan.seq_len, plan.gradient_checkpointing, plan.optimizer) == \
        (train.batch_size, train.cutoff_len, train.gradient_checkpointing, train.optimizer)
    for name in ("quant", "double_quant", "r", "targets", "dropout", "dora", "compute_dtype", "model"):
        assert getattr(plan, name) == getattr(load, name), name
    assert plan.base_bits == load.bits
    assert C.PlanConfig.from_options({"lora_dropout": 0.1}).dropout == 0.1 == \
        C.LoadConfig.from_options({"lora_dropout": 0.1}).dropout  # the old spellings still work
    import qlora_nb

    p = qlora_nb.plan("llama-2-7b")  # auto compute dtype: 2 bytes, as bfloat16
    assert p.components == qlora_nb.plan("llama-2-7b", compute_dtype="bf16").components


def test_new_option_classes_parse_their_flags():
    from qlora_nb.magics.export import ExportMagics
    from qlora_nb.magics.plan import PlanMagics

    args = parse_args(PlanMagics.qlora_quant_report, "--sample all --max-tokens 64 --no-perplexity", "x")
    cfg = CO.QuantReportOptions.from_options(options_from_args(args, CO.QuantReportOptions))
    assert (cfg.sample, cfg.max_tokens, cfg.perplexity) == (None, 64, False)
    args = parse_args(ExportMagics.qlora_merge, "out --dtype bf16 --no-verify --adapter a", "x")
    cfg = CO.MergeOptions.from_options(options_from_args(args, CO.MergeOptions))
    assert (cfg.dtype, cfg.verify, cfg.adapter, cfg.overwrite) == ("bfloat16", False, "a", False)
    assert CO.MergeOptions().dtype == "bfloat16"  # one default for the magic and Session.merge
    args = parse_args(ExportMagics.qlora_export, "job --num-processes 0", "x")
    with pytest.raises(QloraError, match=r"export option 'num_processes' \(--num-processes\): 0 is out of range"):
        CO.ExportOptions.from_options(options_from_args(args, CO.ExportOptions))
    with pytest.raises(QloraError, match="whole numbers or 'all'"):
        CO.QuantReportOptions(sample="lots")


def test_planner_widget_takes_its_choices_from_plan_config():
    import qlora_nb
    from qlora_nb.views.planner import PlannerWidget

    w = PlannerWidget(qlora_nb.plan("smollm2-135m"))
    assert w.choices == {"method": list(C.METHODS), "quant": ["nf4", "fp4"], "optimizer": list(C.OPTIMIZERS),
                         "strategy": ["ddp", "fsdp"]}
    assert "dropout" in w.options and "lora_dropout" not in w.options  # the JS port reads o.dropout
    js = esm("planner.js")
    for literal in ('"paged_adamw_32bit"', '["nf4", "fp4"]', '["full", "lora", "qlora"]', '["ddp", "fsdp"]',
                    "lora_dropout"):
        assert literal not in js, literal


def test_playground_fields_come_from_generate_config():
    from qlora_nb.views.playground import GENERATION_OPTIONS, Playground

    session = SimpleNamespace(adapters={}, model=SimpleNamespace(peft_config={}), config=SimpleNamespace(model="m"))
    pg = Playground(session)
    assert [s["name"] for s in pg.specs] == list(GENERATION_OPTIONS) and "top_p" in GENERATION_OPTIONS
    defaults = C.GenerateConfig()
    assert pg.options == {n: getattr(defaults, n) for n in GENERATION_OPTIONS}
    assert {s["name"]: s["kind"] for s in pg.specs}["sample"] == "bool"
    js = esm("playground.js")
    assert not re.search(r'"(max_new_tokens|temperature|top_p|seed)"', js)


def test_widget_specs_describe_each_field():
    specs = {s["name"]: s for s in option_specs(C.PlanConfig)}
    assert specs["batch_size"] == {"name": "batch_size", "kind": "int", "default": 8, "help": C.BATCH_SIZE.help,
                                   "choices": None, "min": 1, "max": None, "min_exclusive": False,
                                   "optional": False}
    assert specs["gpu"]["optional"] and specs["targets"]["kind"] == "list" and specs["gpu"]["kind"] == "str"
    assert isinstance(C.LORA_R, Concept)


FAKE_DOM = """
class N { constructor(tag) { this.tag = tag; this.kids = []; this.attrs = {}; this.style = {};
  this.classList = { add() {}, remove() {}, toggle() {} }; }
  append(...k) { this.kids.push(...k); } setAttribute(k, v) { this.attrs[k] = v; } getAttribute(k) { return this.attrs[k]; }
  addEventListener() {} removeEventListener() {} replaceChildren(...k) { this.kids = k; } focus() {}
  closest() { return { classList: { toggle() {} } }; }
  all() { return [this, ...this.kids.filter((k) => k instanceof N).flatMap((k) => k.all())]; }
  querySelectorAll(sel) { const id = /data-testid="([^"]+)"/.exec(sel); return this.all().filter((n) => id && n.attrs["data-testid"] === id[1]); }
  querySelector(sel) { return this.querySelectorAll(sel)[0] || null; } }
globalThis.document = { createElement: (t) => new N(t), createElementNS: (ns, t) => new N(t), activeElement: null };
"""


def _render(tmp_path, module: str, state: dict):
    """Render a widget's ES module in node against a minimal DOM; the data-testids and <option> values it drew."""
    import json
    import shutil
    import subprocess

    if shutil.which("node") is None:
        pytest.skip("node not installed")
    (tmp_path / "m.mjs").write_text(esm(module), encoding="utf-8")
    script = FAKE_DOM + f"""const m = await import('./m.mjs'); const state = {json.dumps(state)};
const model = {{ get: (k) => state[k], set: (k, v) => {{ state[k] = v; }}, save_changes() {{}}, on() {{}}, off() {{}},
  send() {{}} }};
const host = new N("div"); m.default.render({{ model, el: host }});
const nodes = host.all();
console.log(JSON.stringify({{ ids: nodes.map((n) => n.attrs["data-testid"]).filter(Boolean),
  options: Object.fromEntries(nodes.filter((n) => n.tag === "select").map((s) => [s.attrs["data-testid"],
    s.kids.map((o) => o.value)])) }}));"""
    out = subprocess.run(["node", "--input-type=module", "-e", script], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_widgets_draw_the_controls_python_sends(tmp_path):
    import qlora_nb
    from qlora_nb.views.planner import PlannerWidget
    from qlora_nb.views.playground import Playground

    w = PlannerWidget(qlora_nb.plan("smollm2-135m", gpu="24GB"))
    state = {k: getattr(w, k) for k in ("archs", "arch", "options", "choices", "constants", "limit_bytes", "measured")}
    state["choices"] = {**state["choices"], "optimizer": ["adamw", "my_new_optimizer"]}  # a list the JS never saw
    drawn = _render(tmp_path, "planner.js", state)
    assert drawn["options"]["plan-optimizer"] == ["adamw", "my_new_optimizer"]
    assert drawn["options"]["plan-method"] == list(C.METHODS) and drawn["options"]["plan-quant"] == ["nf4", "fp4"]
    session = SimpleNamespace(adapters={}, model=SimpleNamespace(peft_config={}), config=SimpleNamespace(model="m"))
    pg = Playground(session)
    state = {k: getattr(pg, k) for k in ("title", "prompt", "specs", "options", "available", "chosen", "columns",
                                         "cells", "notes", "history", "status", "error")}
    drawn = _render(tmp_path, "playground.js", state)
    assert [i[4:] for i in drawn["ids"] if i.startswith("gen-")] == [s["name"] for s in pg.specs]
