"""``qlora_nb.plan`` refuses a sequence or batch no training could use, instead of printing petabytes; a length
above the model's own context but within the bound still plans, with the warning that names the context."""

from __future__ import annotations

import pytest

import qlora_nb
from qlora_nb.config import PLAN_MAX_BATCH, PLAN_MAX_SEQ_LEN, PlanConfig
from qlora_nb.errors import QloraError


@pytest.mark.parametrize(("options", "message"), [
    (dict(seq_len=10**12), r"plan option 'seq_len'.*1,000,000,000,000 is above every model's context"),
    (dict(seq_len=PLAN_MAX_SEQ_LEN + 1), r"seq_len 16,777,217 is above every model's context"),
    (dict(max_seq_length=10**9), r"seq_len 1,000,000,000"),  # an alias names the option it sets
    (dict(batch_size=10**9), r"plan option 'batch_size'.*1,000,000,000 is more rows per device"),
    (dict(batch_size=PLAN_MAX_BATCH + 1, seq_len=8), r"batch_size 65,537"),
])
def test_absurd_sizes_are_refused_in_one_paragraph(options, message):
    with pytest.raises(QloraError, match=message):
        qlora_nb.plan("llama-3.2-1b", **options)
    with pytest.raises(QloraError, match=message):
        PlanConfig.from_options(options)


@pytest.mark.parametrize(("seq_len", "warned"), [(4096, False), (131072, False), (131073, True), (10**6, True),
                                                 (PLAN_MAX_SEQ_LEN, True)])
def test_lengths_within_the_bound_plan_and_name_the_models_context(seq_len, warned):
    p = qlora_nb.plan("llama-3.2-1b", seq_len=seq_len, batch_size=1)
    assert any("exceeds llama-3.2-1b's context of 131072 tokens" in w for w in p.warnings) == warned
    if warned:
        assert "context of 131072" in str(p)


def test_the_plan_magic_refuses_them_too():
    from IPython.testing.globalipapp import get_ipython

    ip = get_ipython()
    ip.run_line_magic("load_ext", "qlora_nb")
    try:
        for line in ("llama-3.2-1b --seq-len 1000000000000", "llama-3.2-1b --batch-size 1000000000"):
            with pytest.raises(QloraError, match=r"this planner stops at"):
                ip.run_line_magic("qlora_plan", line)
    finally:
        ip.run_line_magic("unload_ext", "qlora_nb")
