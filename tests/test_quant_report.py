"""The quantization fidelity report: NF4 vs FP4 vs Int4 on the session's own weights, and 4-bit vs 16-bit perplexity."""

from __future__ import annotations

import json
import math

import pytest

from qlora_nb.errors import QloraError
from qlora_nb.memory.quant_report import int4_absmax, reconstruct, sample_text


def test_report_on_tiny_model(tiny_session):
    r = tiny_session.quant_report(max_tokens=128)
    assert len(r.rows) == 14  # 7 linears x 2 layers, all quantized
    for m in ("nf4", "fp4", "int4"):
        assert 0 < r.totals[m]["rel_mse"] < 0.05
    # Random-init weights are Gaussian: NF4 (normal quantiles) beats FP4 and Int4, layer by layer too.
    assert r.totals["nf4"]["rel_mse"] < r.totals["int4"]["rel_mse"] < r.totals["fp4"]["rel_mse"]
    assert all(row["nf4_rel_mse"] < row["fp4_rel_mse"] for row in r.rows)
    assert set(r.perplexity) == {"4-bit nf4", "16-bit"}
    assert all(math.isfinite(v) and v > 1 for v in r.perplexity.values())
    assert abs(math.log(r.perplexity["4-bit nf4"] / r.perplexity["16-bit"])) < 0.2
    assert r.text_tokens == 127
    json.dumps(r.as_dict())
    df = r.to_pandas()
    assert list(df["name"])[0] == "model.layers.0.self_attn.q_proj.weight" and len(df) == 14
    from qlora_nb.views.quant_report import report_figures

    figs = report_figures(r)
    assert set(figs) == {"layers", "totals"}
    # by layer index, one trace per matrix type (7 in a LLaMA block), plus FP4 and Int4 per-layer means
    layer_traces = figs["layers"].data
    assert len(layer_traces) == 7 + 2 and all(list(t.x) == [0, 1] for t in layer_traces)
    assert {t.name for t in layer_traces[:7]} == {f"NF4 {m}" for m in ("q_proj", "k_proj", "v_proj", "o_proj",
                                                                      "gate_proj", "up_proj", "down_proj")}
    assert "% vs 16-bit" in figs["totals"].layout.annotations[1].text
    assert "relative MSE" in str(r)


def test_report_leaves_the_session_trainable(tiny_session):
    import torch

    tiny_session.quant_report(max_tokens=32, perplexity_check=True, sample=256)
    m = tiny_session.model
    m.train()
    x = m.get_input_embeddings()(torch.tensor([[5, 6, 7]])).detach().requires_grad_(True)
    m(inputs_embeds=x).logits.sum().backward()
    assert x.grad is not None  # the CPU inference repack was not left behind by the eval-mode forwards


def test_batched_quantization_equals_per_weight():
    """Weights are quantized in one bitsandbytes call, zero-padded to whole blocks: same codes as one by one."""
    import torch

    from qlora_nb.memory.quant_report import BLOCK

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 100, generator=g), torch.randn(2, 64, generator=g) * 5
    pa = torch.cat([a.reshape(-1), torch.zeros((-a.numel()) % BLOCK)])
    both = reconstruct(torch.cat([pa, b.reshape(-1)]), "nf4")
    assert torch.equal(both[: a.numel()], reconstruct(a.reshape(-1), "nf4"))
    assert torch.equal(both[pa.numel():], reconstruct(b.reshape(-1), "nf4"))


def test_int4_reference():
    import torch

    w = torch.tensor([0.7, -0.33, 0.1, 0.0] * 16)
    out = int4_absmax(w)
    assert torch.allclose(out[:4], torch.tensor([0.7, -0.3, 0.1, 0.0]), atol=1e-6)  # round(7w/0.7)/7*0.7
    assert int4_absmax(torch.zeros(64)).abs().sum() == 0


def test_sample_text_and_options(tiny_session):
    assert len(sample_text()) > 2000
    with pytest.raises(QloraError, match="sample"):
        tiny_session.quant_report(sample=10)
    r = tiny_session.quant_report(perplexity_check=False, sample=None)
    assert r.perplexity == {} and r.sampled is None and all(row["measured_values"] == row["numel"] for row in r.rows)


def test_quant_report_magic(tiny_session, capsys):
    from IPython.testing.globalipapp import get_ipython, start_ipython

    ip = start_ipython() or get_ipython()
    ip.run_line_magic("load_ext", "qlora_nb")
    try:
        ip.user_ns["qlora"] = tiny_session
        ip.run_line_magic("qlora_quant_report", "--no-perplexity --sample 1024 -o rep")
        assert ip.user_ns["rep"].sampled == 1024
        assert "nf4" in capsys.readouterr().out
        with pytest.raises(QloraError, match="max-tokens"):
            ip.run_line_magic("qlora_quant_report", "--max-tokens 1")
    finally:
        ip.run_line_magic("unload_ext", "qlora_nb")
