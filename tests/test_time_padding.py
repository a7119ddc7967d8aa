"""Time priced from the real rows: padding to each batch's longest row in the Trainer's order, the cutoff, labels."""

from __future__ import annotations

import random
import statistics

import pytest

from qlora_nb.memory.architectures import Arch
from qlora_nb.memory.batches import padded_means, sampler_order
from qlora_nb.memory.speed import Rates, Workload

TINY = Arch("tiny", "x/tiny", "llama", hidden=8, intermediate=16, layers=2, heads=2, kv_heads=1, head_dim=4,
            vocab=32, tied=True)
RATES = Rates(matmul_flops_per_s=1e9, elementwise_bytes_per_s=1e9, op_seconds=1e-6, adamw_seconds_per_param=1e-8,
              dequant_seconds_per_weight={4: 1e-9, 8: 2e-9}, matmul_fp32_flops_per_s=5e8, machine="test")


def test_each_batch_is_padded_to_its_longest_row():
    # two rows in one batch: both computed at the longer one's length; one per batch: no padding
    w = Workload.from_lengths(2, [10, 300], [5, 200], cutoff=100)
    assert w.tokens_per_row == 100 and w.sq_tokens_per_row == 100 * 100 and w.real_tokens_per_row == 55
    assert w.labelled_per_row == 52.5 and w.padding_share == pytest.approx(0.45)
    assert w.lengths == (10, 100)  # truncated at the cutoff before anything else
    one = w.at(1)
    assert one.tokens_per_row == 55 and one.sq_tokens_per_row == (100 + 10_000) / 2 and one.padding_share == 0
    assert one.batch_size == 1 and one.lengths == w.lengths  # re-priced from the same rows
    packed = Workload.from_lengths(2, [10, 300], [5, 200], cutoff=100, grouping="packing")
    assert packed.tokens_per_row == 55 and packed.padding_share == 0


def test_the_forecast_uses_real_tokens_for_throughput_and_padded_for_compute():
    from qlora_nb.memory.speed import predict_step

    w = Workload.from_lengths(2, [10, 30], [], cutoff=100, grouping="random")
    t = predict_step(TINY, "lora", 16, [], 0, 100, w, RATES)
    assert t.tokens == 40  # the rows' own tokens
    assert t.terms["elementwise"] == pytest.approx(6.0 * 100 * TINY.layers * 60 / 1e9)  # 2 rows x 30 computed


@pytest.mark.parametrize("grouping", ["group_by_length", "random"])
@pytest.mark.parametrize("batch,accum", [(4, 1), (8, 1), (2, 4)])
def test_the_expectation_matches_the_trainers_own_sampler(grouping, batch, accum):
    """The padded tokens over transformers' real sampler (torch's generator, 32 seeds) vs the pure expectation."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    rng = random.Random(7)
    lengths = [rng.randint(20, 160) for _ in range(300)]
    real = []
    for seed in range(32):
        g = torch.Generator().manual_seed(seed)
        order = (get_length_grouped_indices(lengths, batch * accum, generator=g) if grouping == "group_by_length"
                 else torch.randperm(len(lengths), generator=g).tolist())
        chunks = [order[i:i + batch] for i in range(0, len(order), batch)]
        real.append(sum(max(lengths[j] for j in c) * len(c) for c in chunks) / len(lengths))
    ours = padded_means(lengths, [], batch, accum, grouping).tokens
    assert ours == pytest.approx(statistics.mean(real), rel=0.03)
    if grouping == "group_by_length":  # grouping is why padding is small; random batches pad far more
        assert ours < padded_means(lengths, [], batch, accum, "random").tokens * 0.85


def test_a_short_run_takes_the_longest_batches_first():
    lengths = list(range(10, 410, 2))  # 200 rows
    first = padded_means(lengths, [], 4, grouping="group_by_length", steps=1)
    assert first.tokens == max(lengths)  # the Trainer's sampler puts the longest row in the first batch
    few = padded_means(lengths, [], 4, grouping="group_by_length", steps=5).tokens
    epoch = padded_means(lengths, [], 4, grouping="group_by_length").tokens
    assert few > epoch  # each mega-batch is sorted longest first
    assert padded_means(lengths, [], 4, grouping="group_by_length", steps=10_000).tokens == epoch  # whole epochs
    order = sampler_order(lengths, 4, "group_by_length", random.Random(0))
    assert sorted(order) == list(range(200))  # a permutation: every row once per epoch


@pytest.fixture
def cache(tmp_path, monkeypatch):
    from qlora_nb.engine.forecast import speed_calibration as C

    monkeypatch.setenv("QLORA_NB_CACHE", str(tmp_path))
    monkeypatch.setattr(C, "measure_rates", lambda *a, **k: Rates(1e12, 1e10, 1e-6, 1e-9, {4: 1e-10, 8: 1e-10},
                                                                  5e11, "cpu:test:2"))
    C.forget()
    yield tmp_path
    C.forget()


def test_plan_by_name_counts_the_rows_with_the_cached_tokenizer(cache, monkeypatch):
    """qlora_nb.plan(name, data=...) reads the tokenizer from the cache (no weights there at all)."""
    from conftest import build_tokenizer

    import qlora_nb
    from qlora_nb.errors import QloraError

    rows = [{"instruction": "say " + "x" * (5 + 7 * i), "output": "ok " * (1 + i % 4)} for i in range(40)]
    with pytest.raises(QloraError, match="not on this machine"):  # nothing cached yet: one clear paragraph
        qlora_nb.plan("smollm2-135m", device="cpu", data=rows)
    folder = cache / "models" / "smollm2-135m"
    build_tokenizer().save_pretrained(str(folder))
    assert not list(folder.glob("*.safetensors"))
    p = qlora_nb.plan("smollm2-135m", device="cpu", data=rows, batch_size=4, seq_len=64, max_steps=3)
    w = p.forecast.workload
    assert w.from_data and w.rows == 36  # the 10% training holds out is not batched
    assert max(w.lengths) == 64 and min(w.lengths) < 64  # truncated at the cutoff, the rest as long as they are
    assert 0 < w.labelled_per_row < w.real_tokens_per_row <= w.tokens_per_row  # only completions are labelled
    text = str(p)
    assert "tokens per row from the data" in text and "padding" in text and "labelled" in text
    full = qlora_nb.plan("smollm2-135m", device="cpu", batch_size=4, seq_len=64, max_steps=3)
    assert p.step_seconds < full.step_seconds  # rows shorter than seq_len cost less than seq_len rows
