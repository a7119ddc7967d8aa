"""The memory planner: byte-exact against the ledger, the QLoRA paper's arithmetic, the table, errors, verdicts,
the JavaScript port, and the magic."""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import pytest

import qlora_nb
from qlora_nb.config import PlanConfig
from qlora_nb.engine.forecast.planning import plan_session
from qlora_nb.errors import QloraError
from qlora_nb.memory import formulas as F
from qlora_nb.memory.architectures import ARCHITECTURES, arch_from_config
from qlora_nb.memory.planner import compute_components
from qlora_nb.units import parse_memory

EXACT = ("quantized_weights", "quant_constants", "other_weights", "adapters")


# ------------------------------------------------------------------ byte-exact vs the measured ledger
@pytest.mark.parametrize("opts", [
    {}, {"double_quant": False}, {"quant": "fp4"}, {"bits": 8}, {"bits": 16},
    {"targets": ["q_proj", "v_proj"], "dora": True}, {"r": 7, "compute_dtype": "float32"},
], ids=["nf4-dq", "nf4", "fp4", "int8", "bf16", "qv-dora", "r7-fp32"])
def test_weights_and_constants_match_ledger_to_the_byte(tiny_model_dir, opts):
    session = qlora_nb.load(str(tiny_model_dir), **{"r": 4, "dropout": 0.0, **opts})
    p = plan_session(session)
    ledger = session.ledger(measure=False)
    for k in EXACT:
        assert p.components[k] == ledger.as_dict()[k], k
    assert p.params == ledger.params
    assert p.bits_per_quantized_param == ledger.bits_per_quantized_param


def test_optimizer_and_gradients_match_after_a_step(tiny_model_dir):
    import torch

    session = qlora_nb.load(str(tiny_model_dir), r=4)
    m = session.model
    m.train()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(0, 200, (2, 16))
    m(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    session.optimizer = opt
    p = plan_session(session, optimizer="adamw")
    led = session.ledger(measure=False).as_dict()
    assert p.components["gradients"] == led["gradients"]
    assert p.components["optimizer_states"] == led["optimizer_states"]


@pytest.mark.integration
def test_demo_model_matches_ledger(demo_session_factory):
    session = demo_session_factory()
    p = session.plan()
    led = session.ledger(measure=False)
    for k in EXACT:
        assert p.components[k] == led.as_dict()[k], k
    assert p.trainable_params == led.params["trainable"]


# ------------------------------------------------------------------ published arithmetic
def test_double_quantization_bits_per_param():
    assert F.constant_bits_per_param(False) == 0.5
    assert F.constant_bits_per_param(True) == 8 / 64 + 32 / (64 * 256)
    assert round(F.constant_bits_per_param(True), 3) == 0.127
    # On a large model the per-layer code tables vanish: 4 + 0.127 bits, and DQ saves ~3 GB on 65B (paper: 0.373 b/p).
    dq = qlora_nb.plan("llama-65b", double_quant=True)
    no = qlora_nb.plan("llama-65b", double_quant=False)
    assert dq.bits_per_quantized_param == pytest.approx(4.127, abs=1e-3)
    assert no.bits_per_quantized_param == pytest.approx(4.5, abs=1e-3)
    saved = no.components["quant_constants"] - dq.components["quant_constants"]
    assert saved == pytest.approx(0.373 / 8 * dq.params["quantized"], rel=0.01)
    assert 2.5e9 < saved < 3.5e9


def test_storage_rules():
    assert F.packed_4bit_bytes(7) == 4 and F.packed_4bit_bytes(8) == 4
    assert F.constants_4bit_bytes(64 * 300, False) == 300 * 4 + 64
    # 300 blocks -> 300 uint8 absmax + offset + 2 second-level absmax + 256-entry code + 16-entry code
    assert F.constants_4bit_bytes(64 * 300, True) == 300 + 4 + 2 * 4 + 1024 + 64
    assert F.int8_bytes(10, 3) == (30, 12)
    assert F.adamw8bit_state_bytes(4095) == 8 * 4095
    assert F.adamw8bit_state_bytes(4096) == 2 * 4096 + 2 * 16 * 4


def test_lora_trainable_counts_follow_r_times_din_plus_dout():
    a = ARCHITECTURES["llama-7b"]
    expected = 64 * a.layers * sum(d_in + d_out for d_in, d_out in [
        (4096, 4096), (4096, 4096), (4096, 4096), (4096, 4096), (4096, 11008), (4096, 11008), (11008, 4096)])
    p = qlora_nb.plan("llama-7b", r=64)
    assert p.trainable_params == expected == 159_907_840  # the QLoRA LLaMA-7B r=64 all-linear count
    qv = qlora_nb.plan("llama-7b", r=8, targets="q_proj,v_proj")
    assert qv.trainable_params == 8 * 32 * (2 * (4096 + 4096))
    assert qv.components["adapters"] == 4 * qv.trainable_params


# ------------------------------------------------------------------ the table
@pytest.mark.parametrize("name,billions", [
    ("llama-2-70b", 68.98), ("llama-7b", 6.74), ("llama-65b", 65.29), ("llama-3-8b", 8.03), ("mistral-7b", 7.24),
    ("qwen2.5-0.5b", 0.494), ("qwen2.5-72b", 72.7), ("gemma-2-2b", 2.61), ("phi-3-mini", 3.82),
    ("smollm2-135m", 0.1345), ("llama-3.2-1b", 1.236), ("gemma-3-27b", 27.0),
])
def test_table_parameter_counts(name, billions):
    assert ARCHITECTURES[name].total_params() / 1e9 == pytest.approx(billions, rel=0.01)


def test_table_entries_are_consistent():
    for a in ARCHITECTURES.values():
        assert a.heads % a.kv_heads == 0, a.name
        assert a.hidden > 0 and a.intermediate > a.hidden and a.layers > 0, a.name
    assert qlora_nb.plan("Qwen/Qwen2.5-7B").arch.name == "qwen2.5-7b"  # hub ids of table entries need no network


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral", "gemma2", "gemma3_text", "phi3"])
def test_module_inventory_matches_transformers(family):
    """The analytic inventory (params and buffers) equals what transformers builds, on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(family, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=300,
                               pad_token_id=0, bos_token_id=1, eos_token_id=2)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    arch = arch_from_config(cfg.to_dict())
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    assert arch.total_params() == n
    linears = sorted((name.rsplit(".", 1)[-1], m.in_features, m.out_features) for name, m in model.named_modules()
                     if isinstance(m, torch.nn.Linear) and not name.endswith("lm_head"))
    planned = sorted((s.name, s.d_in, s.d_out) for s in arch.linears() for _ in range(s.count))
    assert linears == planned
    assert sum(b.numel() for b in model.buffers()) == arch.rotary_buffer_numel() + arch.scalar_buffers


# ------------------------------------------------------------------ errors
def test_unknown_model_lists_close_matches():
    with pytest.raises(QloraError) as e:
        qlora_nb.plan("llama2-7b")
    assert "llama-2-7b" in str(e.value) and "MODEL" in str(e.value)


def test_unreadable_config(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(QloraError, match="not valid JSON"):
        qlora_nb.plan(str(bad))
    bad.write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(QloraError, match="intermediate_size"):
        qlora_nb.plan(str(tmp_path))
    with pytest.raises(QloraError, match="no config.json"):
        qlora_nb.plan(str(tmp_path / ".."))


@pytest.mark.parametrize("opts,name", [({"r": 0}, "'r'"), ({"seq_len": 0}, "'seq_len'"), ({"gpu": "0GB"}, "'gpu'"),
                                       ({"gpu": -3}, "'gpu'"), ({"batch_size": 0}, "'batch_size'"),
                                       ({"gpu": "lots"}, "'gpu'"), ({"targets": "q_prj"}, "'targets'")])
def test_impossible_values_are_refused_naming_the_option(opts, name):
    with pytest.raises(QloraError) as e:
        qlora_nb.plan("llama-2-7b", **opts)
    assert name in str(e.value)


def test_memory_sizes():
    assert parse_memory("24GB") == 24 * 2**30 == parse_memory("24 GiB") == parse_memory(24)
    assert parse_memory("512MB") == 512 * 2**20
    assert parse_memory("1.5TB") == int(1.5 * 2**40)


# ------------------------------------------------------------------ verdicts and the cheapest change
def test_verdicts_and_reason():
    small = qlora_nb.plan("smollm2-135m", gpu="24GB")
    assert small.verdict == "fits" and "biggest component" in small.reason
    guanaco = qlora_nb.plan("llama-65b", gpu="48GB", r=64, batch_size=1, seq_len=512, gradient_checkpointing=True,
                            optimizer="paged_adamw_8bit")
    assert guanaco.verdict in ("fits", "tight")  # the paper's headline: 65B on one 48 GB GPU
    full = qlora_nb.plan("llama-65b", gpu="80GB", method="full")
    assert full.verdict == "won't fit" and full.total > 780e9  # paper: > 780 GB for 16-bit full fine-tuning
    assert full.reason.endswith("switch to qlora (4-bit NF4 base).")
    # 8 GB now fits with 2 GPUs, FSDP and CPU offload (activations 1.2 GiB + a gathered layer pair); 2 GB cannot
    hopeless = qlora_nb.plan("llama-65b", gpu="2GB")
    assert hopeless.verdict == "won't fit" and "nothing in the search fits" in hopeless.reason
    big = qlora_nb.plan("llama-2-7b", gpu="24GB", method="lora", batch_size=8, seq_len=2048)
    assert big.verdict == "won't fit" and "cheapest change that fits: " in big.reason
    assert "biggest component: activations" in big.reason


def test_suggested_change_really_fits():
    p = qlora_nb.plan("llama-2-13b", gpu="24GB", batch_size=4, seq_len=1024)
    assert p.verdict == "won't fit"
    fix = p.reason.split("cheapest change that fits: ")[1].rstrip(".")
    assert fix == "turn on gradient checkpointing"
    fixed = qlora_nb.plan("llama-2-13b", gpu="24GB", batch_size=4, seq_len=1024, gradient_checkpointing=True)
    assert fixed.verdict == "fits"


def test_as_dict_fields():
    d = qlora_nb.plan("llama-2-7b", gpu="24GB").as_dict()
    for k in ("quantized_weights", "quant_constants", "other_weights", "adapters", "gradients", "optimizer_states",
              "activations", "logits", "overhead", "trainable_params", "bits_per_quantized_param", "total",
              "verdict", "reason"):
        assert k in d
    assert d["total"] == sum(d[k] for k in ("quantized_weights", "quant_constants", "other_weights", "adapters",
                                             "gradients", "optimizer_states", "activations", "logits", "overhead"))


def test_gradient_checkpointing_and_8bit_optimizer_shrink_their_components():
    base = qlora_nb.plan("llama-2-7b")
    assert qlora_nb.plan("llama-2-7b", gradient_checkpointing=True).components["activations"] < \
        base.components["activations"] / 4
    assert qlora_nb.plan("llama-2-7b", optimizer="adamw_8bit").components["optimizer_states"] < \
        base.components["optimizer_states"] / 3


def test_session_plan_uses_session_settings(tiny_session):
    p = tiny_session.plan(seq_len=32, batch_size=2)
    assert p.config.base_bits == 4 and p.config.r == 4 and p.measured is not None
    assert "(exact)" in str(p)
    from qlora_nb.engine.forecast.planning import cheapest_fix

    assert cheapest_fix(tiny_session, batch_size=2, cutoff_len=32) is None  # fits: nothing to change


# ------------------------------------------------------------------ the JavaScript port
@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_js_port_matches_python(tmp_path):
    from qlora_nb.views.base import esm
    from qlora_nb.views.planner import arch_payload, planner_constants

    src = esm("planner.js").replace("export default { render };", "")
    (tmp_path / "planner.mjs").write_text(src.replace("document.createElement", "globalThis.document.createElement"))
    cases = []
    grid = [
        ("llama-2-7b", {}), ("llama-2-70b", {"method": "full"}), ("qwen2.5-7b", {"method": "lora", "r": 8}),
        ("phi-3-mini", {"bits": 8, "method": "lora", "optimizer": "adamw_8bit"}),
        ("gemma-3-4b", {"double_quant": False, "gradient_checkpointing": True, "device": "cpu"}),
        ("smollm2-135m", {"targets": ["q_proj", "v_proj"], "dora": True, "lora_dropout": 0.0, "seq_len": 100}),
        ("llama-3-70b", {"gpu": "48GB", "batch_size": 16}), ("gemma-2-27b", {"gpu": "24GB", "method": "lora"}),
        ("llama-65b", {"gpu": "80GB", "method": "full"}), ("llama-65b", {"gpu": "8GB"}),
    ]
    for name, opts in grid:
        p = qlora_nb.plan(name, **opts)
        o = {**PlanConfig().to_dict(), **p.config.to_dict()}
        cases.append({"arch": arch_payload(p.arch), "opts": o, "limit": p.limit_bytes, "components": p.components,
                      "verdict": p.verdict, "fix": p.reason.split("cheapest change that fits: ")[-1]
                      if "cheapest change" in p.reason else None})
    (tmp_path / "cases.json").write_text(json.dumps({"cases": cases, "K": planner_constants()}))
    script = (
        "import { plan } from './planner.mjs'; import fs from 'fs';"
        "const d = JSON.parse(fs.readFileSync('cases.json'));"
        "console.log(JSON.stringify(d.cases.map(c => { const p = plan(c.arch, c.opts, d.K, c.limit);"
        " const fix = p.reason.includes('cheapest change') ? p.reason.split('cheapest change that fits: ')[1] : null;"
        " return {components: p.components, verdict: p.verdict, fix}; })));"
    )
    out = subprocess.run(["node", "--input-type=module", "-e", script], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    for case, js in zip(cases, json.loads(out.stdout), strict=True):
        assert js["components"] == case["components"]
        assert js["verdict"] == case["verdict"]
        assert js["fix"] == case["fix"]


# ------------------------------------------------------------------ widget and magic
def test_widget_state_and_text():
    from qlora_nb.views.planner import PlannerWidget

    p = qlora_nb.plan("llama-2-7b", gpu="24GB")
    w = PlannerWidget(p)
    assert "llama-2-7b" in w.archs and w.limit_bytes == 24 * 2**30
    assert "verdict:" in w._repr_mimebundle_()[0]["text/plain"]
    w.options = {**w.options, "r": 64, "gpu_gib": 80}
    again = w.current_plan()
    assert again.config.r == 64 and again.limit_bytes == 80 * 2**30
    assert again.trainable_params == 4 * p.trainable_params


@pytest.fixture
def shell():
    from IPython.testing.globalipapp import get_ipython, start_ipython

    ip = start_ipython() or get_ipython()
    ip.run_line_magic("load_ext", "qlora_nb")
    yield ip
    ip.run_line_magic("unload_ext", "qlora_nb")


def test_plan_magic(shell, capsys, tiny_session):
    shell.run_line_magic("qlora_plan", "llama-2-7b --gpu 24GB --r 64 --seq-len 1024 --gradient-checkpointing "
                                       "--text -o p")
    p = shell.user_ns["p"]
    assert p.config.r == 64 and p.config.seq_len == 1024 and p.config.gradient_checkpointing
    assert "verdict:" in capsys.readouterr().out
    shell.user_ns["qlora"] = tiny_session
    shell.run_line_magic("qlora_plan", "--text -o sp")
    assert shell.user_ns["sp"].measured["quantized_weights"] == shell.user_ns["sp"].components["quantized_weights"]
    assert "measured" in capsys.readouterr().out
    with pytest.raises(QloraError, match="'r'"):
        shell.run_line_magic("qlora_plan", "llama-2-7b --r 0")
    assert math.isfinite(p.total)


def test_components_scale_with_tokens():
    # On CUDA the peak is the loss phase here (1024+ tokens); below ~300 tokens one layer's backward with its
    # dequantized weight (a per-step, not per-token, tensor) is the larger phase instead (cuda_peak.py).
    a = ARCHITECTURES["llama-2-7b"]
    for device in ("cuda", "cpu"):
        c1 = compute_components(a, PlanConfig(seq_len=1024, batch_size=1, device=device))[0]
        c2 = compute_components(a, PlanConfig(seq_len=1024, batch_size=2, device=device))[0]
        assert abs(c2["activations"] - 2 * c1["activations"]) <= 1  # the CPU scale rounds down once
        assert c2["logits"] == 2 * c1["logits"] and c2["quantized_weights"] == c1["quantized_weights"]


def test_human_bytes_floor_keeps_one_unit_system():
    from qlora_nb.units import human_bytes

    assert human_bytes(19139 * 1024) == "18.7 MiB"
    assert human_bytes(39 * 1024) == "39.0 KiB" and human_bytes(39 * 1024, floor="MiB") == "0.038 MiB"
    assert human_bytes(3 * 2**30, floor="MiB") == "3.0 GiB" and human_bytes(500) == "500 B"


# ------------------------------------------------------------------ context length (max_position_embeddings)
def test_table_carries_each_checkpoints_context_and_splits_variants_that_differ():
    from qlora_nb.memory.architectures import lookup

    assert ARCHITECTURES["smollm2-135m"].context == 8192 and ARCHITECTURES["phi-3-mini"].context == 4096
    assert lookup("llama-3-8b").context == 8192 and lookup("llama-3.1-8b-instruct").context == 131072
    assert lookup("llama-3.3-70b").context == 131072 and lookup("phi-3-mini-128k").context == 131072
    assert ARCHITECTURES["mistral-7b"].context == 32768 and ARCHITECTURES["gemma-2-9b"].context == 8192
    assert ARCHITECTURES["llama-3.1-8b"].total_params() == ARCHITECTURES["llama-3-8b"].total_params()
    unverified = [k for k, a in ARCHITECTURES.items() if a.context is None]
    assert "qwen2.5-72b" in unverified and len(unverified) < len(ARCHITECTURES) // 2  # None, never a guess


def test_context_is_read_from_a_local_config_and_absent_means_none(tmp_path):
    from qlora_nb.memory.architectures import resolve_arch

    cfg = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4, "vocab_size": 300}
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "max_position_embeddings": 256}))
    assert resolve_arch(str(tmp_path))[0].context == 256
    assert arch_from_config(cfg).context is None
    assert arch_from_config({**cfg, "max_position_embeddings": "long"}).context is None
    assert arch_from_config({"model_type": "gemma3", "text_config": {**cfg, "max_position_embeddings": 131072}}
                            ).context == 131072


def test_plan_warns_when_seq_len_exceeds_the_context(tmp_path):
    over = qlora_nb.plan("phi-3-mini", gpu="24GB", seq_len=8192)
    assert len(over.warnings) == 1 and "exceeds phi-3-mini's context of 4096 tokens" in over.warnings[0]
    assert "warning: seq_len 8192 exceeds" in str(over) and over.as_dict()["warnings"] == over.warnings
    assert over.to_event()["warnings"] == over.warnings
    assert qlora_nb.plan("phi-3-mini", gpu="24GB", seq_len=4096).warnings == []
    assert qlora_nb.plan("qwen2.5-72b", gpu="80GB", seq_len=10**6).warnings == []  # unknown context: no guess
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 300, "max_position_embeddings": 256}))
    assert "context of 256 tokens" in qlora_nb.plan(str(tmp_path), seq_len=512).warnings[0]


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_js_planner_context_warning_matches_python(tmp_path):
    from qlora_nb.views.base import esm
    from qlora_nb.views.planner import arch_payload

    (tmp_path / "p.mjs").write_text(esm("planner.js"), encoding="utf-8")
    a = json.dumps(arch_payload(ARCHITECTURES["phi-3-mini"]))
    script = (f"const m = await import('./p.mjs'); const a = {a};\n"
              "console.log(JSON.stringify([m.contextWarning(a, {seq_len: 8192, model: 'phi-3-mini'}),"
              " m.contextWarning(a, {seq_len: 4096, model: 'phi-3-mini'}),"
              " m.contextWarning({...a, context: null}, {seq_len: 10**6, model: 'x'})]));")
    out = subprocess.run(["node", "--input-type=module", "-e", script], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    over, fits, unknown = json.loads(out.stdout)
    assert over.startswith("seq_len 8192 exceeds phi-3-mini's context of 4096 tokens")
    assert over.rstrip(".") in qlora_nb.plan("phi-3-mini", seq_len=8192).warnings[0]
    assert fits == "" and unknown == ""
