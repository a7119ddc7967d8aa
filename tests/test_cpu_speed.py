"""The fused CPU LoRA path computes what peft's modules compute; its dropout keeps the rate and the expectation.

Also: the step-FLOPs model counts what its docstring says, and step events carry the MFU.
"""

from __future__ import annotations

import pytest
from grad_helpers import lora_params, loss_and_grads


def _batch(session, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, session.model.config.vocab_size, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0
    labels = ids.clone()
    labels[:, :5] = -100
    labels[2, 9:] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _session(tiny_model_dir, bits, compute_dtype="float32", dropout=0.0):
    import torch

    import qlora_nb

    session = qlora_nb.load(str(tiny_model_dir), bits=bits, r=4, alpha=8, dropout=dropout,
                            compute_dtype=compute_dtype)
    with torch.no_grad():  # B starts at zero; move it so every adapter's gradient depends on the whole path
        for n, p in lora_params(session).items():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return session


@pytest.mark.parametrize("bits", [16, 4])
@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_fused_lora_matches_peft_loss_and_every_gradient(tiny_model_dir, bits, compute_dtype):
    import torch

    from qlora_nb.engine.speed.cpu_norm import fused_rms_norm
    from qlora_nb.engine.speed.cpu_speed import fused_lora
    from qlora_nb.engine.training.loss import labelled_loss

    session = _session(tiny_model_dir, bits, compute_dtype)
    batch = _batch(session)
    bf16 = compute_dtype == "bfloat16"

    def loss():  # what the Trainer runs: bf16 autocast when the compute dtype is bf16
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return labelled_loss(session.model, batch)

    ref_loss, ref_grads = loss_and_grads(session, loss)
    with fused_lora(session.model) as switched, fused_rms_norm(session.model) as norms:
        assert switched == len([m for m in session.model.modules() if hasattr(m, "lora_A")]) > 0
        assert norms == len([m for m in session.model.modules() if type(m).__name__ == "LlamaRMSNorm"]) > 0
        fused_loss, grads = loss_and_grads(session, loss)
    assert all("forward" not in m.__dict__ for m in session.model.modules())  # peft's and transformers' forwards
    rtol, atol = (2e-2, 1e-3) if bf16 else (1e-4, 1e-6)
    assert torch.allclose(fused_loss, ref_loss, rtol=rtol / 10, atol=atol), (fused_loss, ref_loss)
    assert grads.keys() == ref_grads.keys() == lora_params(session).keys()
    for n, g in grads.items():
        assert g is not None and g.dtype == torch.float32, n
        ref = ref_grads[n]
        # bf16: both paths round every matmul to bf16, in different orders; compare the whole tensor's error
        err = (g - ref).norm() / ref.norm().clamp(min=1e-12)
        assert err < (3e-2 if bf16 else 1e-5), (n, float(err))


def test_keep_mask_rate_and_scale():
    import torch

    from qlora_nb.engine.speed.dropout_mask import drop_probability, keep_mask

    for p in (0.05, 0.1, 0.5):
        assert abs(drop_probability(p) - p) <= 0.5 / 65536
        torch.manual_seed(0)
        mask, scale = keep_mask((1000, 1000), p)
        assert mask.dtype == torch.bool and mask.shape == (1000, 1000)
        keep = 1 - drop_probability(p)
        rate = mask.float().mean().item()
        assert abs(rate - keep) < 5 * (keep * (1 - keep) / 1e6) ** 0.5, (p, rate)
        assert scale == 1 / keep  # E[mask * scale] = 1 exactly
    torch.manual_seed(1)
    a = keep_mask((64, 64), 0.3)[0]
    torch.manual_seed(1)
    assert torch.equal(a, keep_mask((64, 64), 0.3)[0])  # the Trainer's seed makes runs repeatable
    assert not torch.equal(a, keep_mask((64, 64), 0.3)[0])


def test_fused_dropout_keeps_the_expectation_of_the_lora_branch(tiny_model_dir):
    """With A = 1 and B = 1/(r·K·scaling), the LoRA branch's output per token is the kept fraction x 1/keep."""
    import torch

    from qlora_nb.engine.speed.cpu_speed import drop_probability, fused_lora

    p = 0.25
    session = _session(tiny_model_dir, 16, dropout=p)
    layer = next(m for m in session.model.modules() if hasattr(m, "lora_A"))
    k = layer.get_base_layer().in_features
    r, s = layer.lora_A["default"].out_features, layer.scaling["default"]
    with torch.no_grad():
        layer.lora_A["default"].weight.fill_(1.0)
        layer.lora_B["default"].weight.fill_(1.0 / (r * k * s))
    x = torch.ones(64, 50, k, requires_grad=True)
    session.model.train()
    torch.manual_seed(0)
    with fused_lora(session.model):
        y = layer(x)
    branch = (y - layer.get_base_layer()(x)).detach()  # (64, 50, out): every output column alike
    per_token = branch[..., 0].flatten()
    keep = 1 - drop_probability(p)
    kept = per_token * keep  # the fraction of the K inputs kept for that token
    assert torch.allclose(kept * k, (kept * k).round(), atol=1e-3)  # whole elements are dropped, not scaled down
    assert abs(per_token.mean().item() - 1.0) < 5 * (p / (keep * k * per_token.numel())) ** 0.5
    # and backward applies the same mask: the input gradient through the branch is mask/keep times A^T B^T g
    y.sum().backward()
    base_grad = layer.get_base_layer().weight.float().sum(0)
    branch_grad = (x.grad - base_grad).reshape(-1, k)  # per element: (mask/keep) * sum over outputs of (AB^T s)
    out = layer.get_base_layer().out_features
    expected = out / (k * keep)
    assert torch.allclose(branch_grad[branch_grad.abs() > 1e-6], torch.tensor(expected), rtol=1e-3)
    assert abs((branch_grad.abs() > 1e-6).float().mean().item() - keep) < 0.02


def test_fused_path_steps_aside_for_eval_no_grad_and_second_adapters(tiny_model_dir, monkeypatch):
    import torch

    from qlora_nb.engine.speed import cpu_speed

    session = _session(tiny_model_dir, 4)
    calls = []
    real = cpu_speed.fused_lora_fn()

    class Counted(real):
        @staticmethod
        def forward(ctx, *a):
            calls.append(1)
            return real.forward(ctx, *a)

    monkeypatch.setattr(cpu_speed, "fused_lora_fn", lambda: Counted)
    ids = torch.tensor([[5, 17, 42, 99]])
    with cpu_speed.fused_lora(session.model):
        session.model.eval()
        with torch.no_grad():
            session.model(input_ids=ids)
        assert not calls
        session.model.train()
        session.model(input_ids=ids)
        assert len(calls) == len([m for m in session.model.modules() if hasattr(m, "lora_A")])
        calls.clear()
        with session.model.disable_adapter():
            session.model(input_ids=ids)
        assert not calls


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_rms_norm_is_the_modules_forward_and_its_input_gradient(dtype):
    import torch
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from qlora_nb.engine.speed.cpu_norm import fused_rms_norm

    torch.manual_seed(0)
    dt = getattr(torch, dtype)
    norm = LlamaRMSNorm(48, eps=1e-5).to(dt)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.3)
    norm.weight.requires_grad_(False)
    x = (torch.randn(3, 7, 48) * 4).to(dt)
    g = torch.randn(3, 7, 48).to(dt)

    def run():
        xi = x.clone().requires_grad_()
        y = norm(xi)
        y.backward(g)
        return y.detach(), xi.grad

    ref_y, ref_dx = run()
    with fused_rms_norm(norm) as n:
        assert n == 1
        y, dx = run()
        norm.weight.requires_grad_(True)  # a trained norm weight needs its own gradient: the module's forward
        xi = x.clone().requires_grad_()
        norm(xi).backward(g)
        assert norm.weight.grad is not None
        norm.weight.requires_grad_(False)
    assert "forward" not in norm.__dict__
    assert torch.equal(y, ref_y)  # the same arithmetic in the same order
    err = ((dx.float() - ref_dx.float()).norm() / ref_dx.float().norm()).item()
    assert err < (1e-2 if dtype == "bfloat16" else 1e-5), err


def test_dropout_masks_replay_under_gradient_checkpointing(tiny_model_dir):
    """Recomputed forwards draw the same masks (seeds come from torch's generator, which checkpointing restores)."""
    import torch

    from qlora_nb.engine.speed.cpu_norm import fused_rms_norm
    from qlora_nb.engine.speed.cpu_speed import fused_lora

    session = _session(tiny_model_dir, 4, dropout=0.3)
    batch = _batch(session)

    def grads():
        torch.manual_seed(7)
        with fused_lora(session.model), fused_rms_norm(session.model):
            return loss_and_grads(session, lambda: session.model(**batch).loss)

    loss, plain = grads()
    session.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        loss_ckpt, ckpt = grads()
    finally:
        session.model.gradient_checkpointing_disable()
    assert torch.equal(loss, loss_ckpt)
    for n, g in plain.items():
        assert ckpt[n] is not None and torch.allclose(ckpt[n], g, rtol=1e-5, atol=1e-7), n
    torch.manual_seed(8)  # and a different seed draws different masks: dropout is really on
    with fused_lora(session.model):
        other = loss_and_grads(session, lambda: session.model(**batch).loss)[0]
    assert not torch.equal(other, loss)


def test_kept_block_constants_dequantize_to_bitsandbytes_own_weight(tiny_model_dir):
    """The float32 constants kept for a run give bit-for-bit the weight bitsandbytes' dequantize_4bit gives."""
    import bitsandbytes.functional as bnbf
    import torch

    from qlora_nb.engine.speed.fused_lora_op import Absmax

    session = _session(tiny_model_dir, 4)
    bases = [m.get_base_layer() for m in session.model.modules() if hasattr(m, "lora_A")]
    assert all(b.weight.quant_state.nested for b in bases)  # double quantization: the constants are 8-bit
    kept = Absmax()
    for b in bases:
        ref = bnbf.dequantize_4bit(b.weight.data, b.weight.quant_state)
        assert torch.equal(kept.weight(b, ref.dtype), ref)
        assert torch.equal(kept.weight(b, ref.dtype), ref)  # and again from the kept constants
    assert len(kept._cache) == len(bases)
    kept.clear()
    assert not kept._cache


def test_plain_adamw_trains_with_torchs_fused_kernel():
    from qlora_nb.engine.training.train import _optim_name

    assert _optim_name("adamw") == "adamw_torch_fused"
    assert _optim_name("paged_adamw_8bit") == "paged_adamw_8bit"


def test_backprop_after_generation_reaches_every_adapter_through_the_fused_path(tiny_model_dir):
    """The CPU repack trap again, with the fused op: generation, then train, then every adapter has its gradient."""
    import torch

    from qlora_nb.engine.model.quantize import guard_cpu_repack
    from qlora_nb.engine.speed.cpu_norm import fused_rms_norm
    from qlora_nb.engine.speed.cpu_speed import fused_lora

    session = _session(tiny_model_dir, 4)
    batch = _batch(session)
    ref = loss_and_grads(session, lambda: session.model(**batch).loss)[1]
    session.model.eval()
    with torch.no_grad():
        session.model.generate(input_ids=batch["input_ids"][:1, :5], max_new_tokens=4, do_sample=False)
    guard_cpu_repack(session.model)  # what Session.train does before every run
    with fused_lora(session.model), fused_rms_norm(session.model):
        after = loss_and_grads(session, lambda: session.model(**batch).loss)[1]
    for n, g in ref.items():
        assert after[n] is not None and after[n].abs().sum() > 0, n
        assert torch.allclose(after[n], g, rtol=1e-4, atol=1e-6), n


def test_step_flops_model_counts_linears_lora_attention_and_labelled_head(tiny_session):
    from conftest import TINY

    from qlora_nb.engine.forecast.flops import flops_model

    fm = flops_model(tiny_session.model)
    h, i, L = TINY["hidden_size"], TINY["intermediate_size"], TINY["num_hidden_layers"]
    kv = h // TINY["num_attention_heads"] * TINY["num_key_value_heads"]
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]
    r = 4
    per_token = L * sum(4 * k * n + 6 * r * (k + n) for k, n in shapes)
    assert fm.per_token == per_token
    assert fm.attention_width == L * h
    vocab = tiny_session.model.config.vocab_size
    assert fm.head == 4 * h * vocab
    batch = _batch(tiny_session)  # rows of 12, 12 and 9 tokens; 7 + 7 + 4 labelled targets
    assert fm.batch(batch) == per_token * 33 + 12 * L * h * (144 + 144 + 81) + 4 * h * vocab * 18


def test_step_events_carry_the_mfu(tiny_session, tmp_path):
    steps = []
    tiny_session.events.subscribe(lambda e: e.get("kind") == "step" and steps.append(e))
    rows = [{"instruction": f"say {i}", "output": f"number {i}"} for i in range(8)]
    result = tiny_session.train(data=rows, max_steps=2, batch_size=2, val_split=0, n_probes=0,
                                output_dir=str(tmp_path / "run"), peak_flops=1e9)
    assert len(steps) == 2 and all(0 < e["mfu"] for e in steps)
    assert result.metrics["train_flops"] > 0 and result.metrics["peak_flops"] == 1e9


def test_matmul_peak_is_measured_once_per_machine_and_kept_in_the_cache(tmp_path, monkeypatch):
    import json

    import torch

    from qlora_nb.engine.forecast import flops

    monkeypatch.setenv("QLORA_NB_CACHE", str(tmp_path))
    monkeypatch.setattr(flops, "_PEAKS", {})
    calls = []
    real = torch.nn.functional.linear
    monkeypatch.setattr(torch.nn.functional, "linear", lambda *a: calls.append(1) or real(*a))
    first = flops.matmul_peak([(64, 32)], "float32", tokens=16, seconds=0.02)
    assert first > 0 and calls
    stored = json.loads((tmp_path / flops.PEAKS_FILE).read_text())
    assert list(stored.values()) == [first] and "float32" in next(iter(stored))
    calls.clear()
    monkeypatch.setattr(flops, "_PEAKS", {})  # a new process on the same machine: read, not measured
    assert flops.matmul_peak([(64, 32)], "float32", tokens=16, seconds=0.02) == first and not calls
    monkeypatch.setattr(flops, "_PEAKS", {})  # other shapes are another entry
    assert flops.matmul_peak([(64, 48)], "float32", tokens=16, seconds=0.02) > 0 and calls
    assert len(json.loads((tmp_path / flops.PEAKS_FILE).read_text())) == 2
    monkeypatch.setattr(flops, "_PEAKS", {})
    (tmp_path / flops.PEAKS_FILE).write_text("not json")  # a damaged cache is measured over, not an error
    assert flops.matmul_peak([(64, 32)], "float32", tokens=16, seconds=0.02) > 0


def test_machine_measurements_leave_the_global_generator_alone(tmp_path, monkeypatch):
    """They run between a run's set_seed and its first step, the first time in a process (issue 34)."""
    import torch

    from qlora_nb.engine.forecast import flops, speed_calibration

    monkeypatch.setenv("QLORA_NB_CACHE", str(tmp_path))
    monkeypatch.setattr(flops, "_PEAKS", {})
    monkeypatch.setattr(speed_calibration, "_RATES", {})
    before = torch.random.get_rng_state()
    assert flops.matmul_peak([(64, 32)], "float32", tokens=16, seconds=0.02) > 0
    assert speed_calibration.machine_rates([(64, 32)], "float32", tokens=16).matmul_flops_per_s > 0
    assert torch.equal(torch.random.get_rng_state(), before)


def test_progress_line_shows_the_mfu_when_the_event_has_it():
    from qlora_nb.views.progress import step_fields

    e = {"step": 3, "max_steps": 10, "loss": 1.0, "tokens_per_s": 250.0}
    assert "MFU" not in " ".join(step_fields(e))
    assert step_fields({**e, "mfu": 0.123})[-1] == "MFU 12.3%"
