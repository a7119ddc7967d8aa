"""Foundation: loading, the ledger's exactness, LoRA counts, backprop through 4-bit weights."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from grad_helpers import grads_after_one_step, lora_params

import qlora_nb
from qlora_nb.errors import QloraError


def test_load_ext_imports_no_heavy_modules():
    code = (
        "import sys, time; from IPython.testing.globalipapp import start_ipython; ip = start_ipython();"
        "t = time.perf_counter(); ip.run_line_magic('load_ext', 'qlora_nb'); dt = time.perf_counter() - t;"
        "heavy = [m for m in ('torch', 'transformers', 'plotly', 'peft', 'bitsandbytes') if m in sys.modules];"
        "assert not heavy, heavy; assert 'qlora_load' in ip.magics_manager.magics['line'];"
        "ip.run_line_magic('unload_ext', 'qlora_nb'); assert 'qlora_load' not in ip.magics_manager.magics['line'];"
        "print(dt)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip().splitlines()[-1]) < 0.3


def test_ledger_weights_and_constants_are_the_real_tensor_bytes(tiny_session):
    import bitsandbytes as bnb

    expected_q, expected_c = 0, 0
    for m in tiny_session.model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            w = m.weight
            qs = w.quant_state
            expected_q += w.numel() * w.element_size()
            tensors = [qs.absmax, qs.code, qs.offset, qs.state2.absmax, qs.state2.code]
            expected_c += sum(t.numel() * t.element_size() for t in tensors)
    led = tiny_session.ledger()
    assert led.as_dict()["quantized_weights"] == expected_q
    assert led.as_dict()["quant_constants"] == expected_c
    assert set(led.as_dict()) == {"quantized_weights", "quant_constants", "other_weights", "adapters", "gradients",
                                  "optimizer_states", "activations_and_other"}
    assert "RSS" in led.measured_source
    assert "quantized_weights" in str(led)


def test_params_total_of_4bit_equals_16bit(tiny_model_dir):
    s4 = qlora_nb.load(str(tiny_model_dir), bits=4)
    s16 = qlora_nb.load(str(tiny_model_dir), bits=16)
    assert s4.params["total"] == s16.params["total"]
    assert s4.params["quantized"] > 0 and s16.params["quantized"] == 0
    base = sum(p.numel() for n, p in s16.model.named_parameters() if not p.requires_grad)
    assert s16.params["total"] == base + s16.params["trainable"]


def test_lora_trainable_count_is_sum_of_r_times_din_plus_dout(tiny_session):
    r = tiny_session.config.r
    expected = 0
    for m in tiny_session.model.modules():
        if hasattr(m, "lora_A") and len(getattr(m, "lora_A", {})):
            expected += r * (m.in_features + m.out_features)
    assert tiny_session.params["trainable"] == expected
    led = tiny_session.ledger()
    assert sum(m.params for m in led.matrices) == expected


@pytest.mark.parametrize("double_quant", [False, True])
def test_bits_per_quantized_param_follows_the_block_formula(tiny_model_dir, double_quant):
    """4 bits + one fp32 absmax per 64 (4.5), or 8-bit absmax + fp32 per 256 (~4.127), plus per-layer tables."""
    import bitsandbytes as bnb

    s = qlora_nb.load(str(tiny_model_dir), double_quant=double_quant)
    total_bytes, n_total = 0, 0
    for m in s.model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            n = math.prod(m.weight.quant_state.shape)
            blocks = math.ceil(n / 64)
            if double_quant:
                per_layer = n // 2 + blocks + 4 * math.ceil(blocks / 256) + 4 * 16 + 4 + 4 * 256
            else:
                per_layer = n // 2 + 4 * blocks + 4 * 16
            total_bytes += per_layer
            n_total += n
    led = s.ledger(measure=False)
    assert led.params["quantized"] == n_total
    assert led.bits_per_quantized_param == pytest.approx(8 * total_bytes / n_total, rel=1e-12)


@pytest.mark.integration
def test_demo_model_bits_per_param_match_the_paper(demo_session_factory):
    dq = demo_session_factory().ledger(measure=False).bits_per_quantized_param
    plain = demo_session_factory(double_quant=False).ledger(measure=False).bits_per_quantized_param
    assert 4.127 <= dq < 4.16  # 4 + 8/64 + 32/(64*256), plus small per-layer code tables
    assert 4.5 <= plain < 4.51


def test_backprop_reaches_every_adapter_after_generation(tiny_model_dir):
    """The CPU repack trap: an eval-mode forward must not cut gradients for later training."""
    import torch

    ids = torch.tensor([[5, 17, 42, 99, 7, 64, 3, 12]])
    fresh = qlora_nb.load(str(tiny_model_dir), seed=1, dropout=0.0)
    # B starts at zero, so give B a value to make every A's gradient non-zero too.
    with torch.no_grad():
        for n, p in lora_params(fresh).items():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    state = {n: p.detach().clone() for n, p in lora_params(fresh).items()}
    before = grads_after_one_step(fresh, ids)

    used = qlora_nb.load(str(tiny_model_dir), seed=1, dropout=0.0)
    with torch.no_grad():
        for n, p in lora_params(used).items():
            p.copy_(state[n])
    used.model.eval()
    with torch.no_grad():
        used.model.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
    after = grads_after_one_step(used, ids)
    for name, g in before.items():
        assert g is not None and after[name] is not None, name
        assert torch.allclose(g, after[name], rtol=1e-3, atol=1e-6), name


def test_4bit_gradients_match_16bit_reference(tiny_model_dir):
    """Gradients flow through the dequantized 4-bit weights: close to a 16-bit run of the same adapters."""
    import torch

    ids = torch.tensor([[5, 17, 42, 99, 7, 64, 3, 12]])
    sessions = [qlora_nb.load(str(tiny_model_dir), bits=b, seed=3, dropout=0.0, compute_dtype="float32")
                for b in (4, 16)]
    for s in sessions:
        with torch.no_grad():
            for n, p in lora_params(s).items():
                if "lora_B" in n:
                    torch.manual_seed(hash(n) % 1000)
                    p.normal_(0, 0.02)
    g4, g16 = (grads_after_one_step(s, ids) for s in sessions)
    for name in g16:
        a, b = g4[name].flatten(), g16[name].flatten()
        assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.9, name


def test_bad_options_name_the_option(tiny_model_dir):
    with pytest.raises(QloraError, match="'bits'.*Accepted: 4, 8, 16"):
        qlora_nb.load(str(tiny_model_dir), bits=3)
    with pytest.raises(QloraError, match="unknown load option 'rank'"):
        qlora_nb.load(str(tiny_model_dir), rank=8)
    with pytest.raises(QloraError, match="does not exist"):
        qlora_nb.load("./no/such/folder")
    with pytest.raises(QloraError, match="unknown model alias 'smollm3'.*smollm2-135m"):
        qlora_nb.load("smollm3")
