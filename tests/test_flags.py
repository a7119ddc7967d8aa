"""One declaration per option: every config field is a magic flag, with its help, and parses to the option."""

from __future__ import annotations

import dataclasses

import pytest

from qlora_nb.command_options import ExportOptions, MergeOptions, QuantReportOptions, SaveOptions
from qlora_nb.config import GenerateConfig, LoadConfig, PlanConfig
from qlora_nb.magics.base import parse_args
from qlora_nb.magics.compare import CompareMagics
from qlora_nb.magics.export import ExportMagics
from qlora_nb.magics.flags import options_from_args
from qlora_nb.magics.load import LoadMagics
from qlora_nb.magics.plan import PlanMagics

CASES = [(LoadMagics.qlora_load, LoadConfig, {"model"}), (PlanMagics.qlora_plan, PlanConfig, {"model"}),
         (CompareMagics.qlora_compare, GenerateConfig, set()), (ExportMagics.qlora_save, SaveOptions, set()),
         (ExportMagics.qlora_merge, MergeOptions, set()), (ExportMagics.qlora_export, ExportOptions, set()),
         (PlanMagics.qlora_quant_report, QuantReportOptions, set())]


@pytest.mark.parametrize("magic,cls,positional", CASES,
                         ids=["load", "plan", "compare", "save", "merge", "export", "quant_report"])
def test_every_field_is_a_flag_with_its_help(magic, cls, positional):
    flags = {s for a in magic.parser._actions for s in a.option_strings}
    for f in dataclasses.fields(cls):
        if f.name in positional:
            continue
        assert "--" + f.name.replace("_", "-") in flags, f.name
        first_words = " ".join(f.metadata["help"].split()[:3])
        assert first_words in " ".join(magic.__doc__.split()), f.name


def test_flags_parse_to_the_options_the_config_accepts():
    args = parse_args(LoadMagics.qlora_load, "tiny --bits 8 --no-double-quant -r 4 --lora-alpha 8 --dora", "qlora_load")
    options = options_from_args(args, LoadConfig)
    assert options == {"model": "tiny", "bits": "8", "double_quant": False, "r": "4", "alpha": "8", "dora": True}
    cfg = LoadConfig.from_options(options)
    assert (cfg.bits, cfg.double_quant, cfg.r, cfg.alpha, cfg.dora) == (8, False, 4, 8.0, True)
    args = parse_args(CompareMagics.qlora_compare, '"hi" --greedy --top-p 0.5', "qlora_compare")
    assert options_from_args(args, GenerateConfig) == {"sample": False, "top_p": "0.5"}


def test_train_help_lists_every_train_option():
    from qlora_nb.config import TrainConfig
    from qlora_nb.magics.train import TrainMagics

    doc = TrainMagics.qlora_train.__doc__
    for f in dataclasses.fields(TrainConfig):
        assert f"\n  {f.name}" in doc, f.name
