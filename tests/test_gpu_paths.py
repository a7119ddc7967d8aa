"""The CUDA path, tested without a GPU by mocking at the seams where the code asks torch about the device.

Each test patches only what the code under test calls (``torch.cuda.is_available``, the capability, the
allocator statistics, ``from_pretrained``), so the same assertions would hold on a real GPU; the real run is
benchmarks/gpu_check.py (``make gpu-check``).
"""

from __future__ import annotations

import pytest
import torch

from qlora_nb.precision import canonical_dtype, precision_warning, resolve_compute_dtype, trainer_precision


# ------------------------------------------------------------------ dtype choice
@pytest.mark.parametrize("device, capability, expected", [
    ("cpu", None, "bfloat16"),
    ("cuda", (7, 0), "float16"),    # V100
    ("cuda", (7, 5), "float16"),    # T4 (Colab)
    ("cuda", (8, 0), "bfloat16"),   # A100
    ("cuda:1", (8, 9), "bfloat16"),  # L4 / RTX 40xx
    ("cuda", (9, 0), "bfloat16"),   # H100
    ("cuda", None, "float16"),      # unknown capability: fp16 works everywhere
])
def test_auto_dtype_follows_the_hardware(device, capability, expected):
    assert resolve_compute_dtype("auto", device, capability) == expected


@pytest.mark.parametrize("asked", ["fp32", "float32", "bf16", "fp16", "half"])
def test_an_explicit_dtype_is_kept(asked):
    assert resolve_compute_dtype(asked, "cuda", (7, 5)) == canonical_dtype(asked)
    assert resolve_compute_dtype(asked, "cpu") == canonical_dtype(asked)


def test_bf16_on_an_old_gpu_warns_but_fp16_and_new_gpus_do_not():
    assert "7.5" in precision_warning("bfloat16", "cuda", (7, 5))
    assert precision_warning("float16", "cuda", (7, 5)) is None
    assert precision_warning("bfloat16", "cuda", (8, 0)) is None
    assert precision_warning("bfloat16", "cpu", None) is None


def test_trainer_flags_follow_the_dtype():
    assert trainer_precision("float16", "cuda") == {"bf16": False, "fp16": True}
    assert trainer_precision("bfloat16", "cuda:0") == {"bf16": True, "fp16": False}
    assert trainer_precision("bfloat16", "cpu") == {"bf16": True, "fp16": False}  # CPU bf16 autocast
    assert trainer_precision("float16", "cpu") == {"bf16": False, "fp16": False}  # no fp16 AMP on CPU
    assert trainer_precision("float32", "cuda") == {"bf16": False, "fp16": False}


def test_the_default_load_option_is_auto():
    from qlora_nb.config import LoadConfig

    assert LoadConfig().compute_dtype == "auto"
    assert LoadConfig.from_options({"compute_dtype": "fp16"}).compute_dtype == "float16"


@pytest.fixture
def fake_gpu(monkeypatch):
    """A visible CUDA device 1 of the given capability; from_pretrained records its kwargs."""
    state: dict = {}

    def install(capability=(7, 5)):
        # bitsandbytes picks its backend at import: import it while torch still reports no GPU
        import bitsandbytes  # noqa: F401
        import transformers.integrations.bitsandbytes  # noqa: F401

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (state.setdefault(
            "capability_of", index), capability)[1])
        return state

    return install


def _fake_model_dir(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, vocab_size=32).save_pretrained(str(tmp_path))
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "model.safetensors"))  # valid file: load_base checks weights
    return tmp_path


@pytest.mark.parametrize("capability, dtype", [((7, 5), torch.float16), ((8, 0), torch.bfloat16)])
def test_load_dtype_bnb_compute_dtype_and_device_map_follow_one_choice(tmp_path, monkeypatch, fake_gpu,
                                                                       capability, dtype):
    """T4 -> fp16 everywhere, A100 -> bf16 everywhere; the device map names the current GPU's index."""
    import transformers

    from qlora_nb.config import LoadConfig
    from qlora_nb.engine.model import quantize

    state = fake_gpu(capability)
    captured = {}

    def fake_from_pretrained(path, **kwargs):
        captured.update(kwargs)
        return torch.nn.Linear(2, 2)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    cfg = LoadConfig.from_options({})
    device = quantize.pick_device(cfg)
    assert device == "cuda"
    assert quantize.resolve_dtype(cfg, device) == {torch.float16: "float16", torch.bfloat16: "bfloat16"}[dtype]
    assert state["capability_of"] == 1  # asked about the current GPU, not GPU 0
    quantize.load_base(_fake_model_dir(tmp_path), cfg, device)
    assert captured["dtype"] is dtype
    assert captured["quantization_config"].bnb_4bit_compute_dtype is dtype
    assert captured["device_map"] == {"": 1}  # explicit index: accelerate refuses plain "cuda" off rank 0


def test_no_gpu_visible(monkeypatch):
    from qlora_nb.config import LoadConfig
    from qlora_nb.engine.model.quantize import pick_device, resolve_dtype
    from qlora_nb.errors import QloraError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = LoadConfig.from_options({})
    assert pick_device(cfg) == "cpu"
    assert resolve_dtype(cfg, "cpu") == "bfloat16"
    with pytest.raises(QloraError, match="no CUDA GPU"):
        pick_device(LoadConfig.from_options({"device": "cuda"}))


class _FakeSession:
    def __init__(self, device="cuda", compute_dtype="float16"):
        from qlora_nb.config import LoadConfig

        self.device = device
        self.config = LoadConfig.from_options({"compute_dtype": compute_dtype})
        self.peak_rss = None
        self.model = None  # an unsharded base (engine/distributed.is_sharded reads the model's load flag)


@pytest.mark.parametrize("compute_dtype, bf16, fp16", [("float16", False, True), ("bfloat16", True, False)])
def test_trainer_arguments_on_cuda(monkeypatch, tmp_path, compute_dtype, bf16, fp16):
    """On CUDA: mixed precision from the load's dtype (fp16 -> loss scaler), no use_cpu, paged optimizer kept."""
    import transformers.training_args as hf_args

    from qlora_nb.config import TrainConfig
    from qlora_nb.engine.training import train as train_mod

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: pytest.fail("must not be consulted"))
    monkeypatch.setattr(hf_args, "is_torch_bf16_gpu_available", lambda: True)  # transformers' own bf16 GPU check
    cfg = TrainConfig.from_options({"data": "demo", "optimizer": "paged_adamw_8bit"})
    args = train_mod._training_args(_FakeSession("cuda", compute_dtype), cfg, tmp_path, "run", False, 10)
    assert (args.bf16, args.fp16, args.use_cpu) == (bf16, fp16, False)
    assert getattr(args.optim, "value", args.optim) == "paged_adamw_8bit"


def test_fp16_training_keeps_fp32_adapters(tiny_model_dir):
    """The GradScaler refuses to unscale fp16 gradients: trainable weights must be fp32 even in an fp16 load."""
    import qlora_nb

    session = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0, compute_dtype="fp16")
    assert session.config.compute_dtype == "float16"
    trainable = [p for p in session.model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    frozen16 = [p for p in session.model.parameters() if not p.requires_grad and p.is_floating_point()]
    assert frozen16 and all(p.dtype == torch.float16 for p in frozen16)


def test_a_second_adapter_in_an_fp16_session_is_fp32_too(tiny_model_dir, tmp_path):
    import qlora_nb

    session = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0, compute_dtype="fp16", bits=16)
    saved = session.save(tmp_path / "a")
    name = session.load_adapter(saved, name="second")
    session.set_adapter(name)
    lora = [p for n, p in session.model.named_parameters() if ".lora_" in n]
    assert lora and all(p.dtype == torch.float32 for p in lora)
    assert any(p.requires_grad for p in lora)


def test_load_resets_the_cuda_peak(tiny_model_dir, monkeypatch):
    """The breakdown after a load on CUDA counts from the loaded model, not quantization's temporaries."""
    import qlora_nb
    from qlora_nb.memory import ledger

    calls = []
    monkeypatch.setattr(ledger, "reset_peak", lambda device: calls.append(device))
    qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0)
    assert calls == ["cpu"]  # called with the session's device; a no-op off CUDA


# ------------------------------------------------------------------ memory
def test_cuda_peak_is_reset_at_each_run(monkeypatch):
    from qlora_nb.engine.training.train_events import PeakRssSampler as _RssSampler

    calls = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: calls.append(a))
    with _RssSampler(_FakeSession("cuda")):
        pass
    assert len(calls) == 1
    with _RssSampler(_FakeSession("cpu")):
        pass
    assert len(calls) == 1  # no CUDA calls on a CPU session


def test_ledger_reads_the_cuda_allocator_and_paged_state(monkeypatch):
    from qlora_nb.memory.ledger import measure_ledger

    model = torch.nn.Linear(8, 8)
    state = torch.zeros(1000)
    state.is_paged = True  # what bitsandbytes' get_paged sets on unified-memory optimizer state
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.state[model.weight] = {"state1": state}
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 10_000_000)
    led = measure_ledger(model, opt, device="cuda:0", peak_bytes=123)
    assert led.measured_source == "cuda max_memory_allocated" and led.measured_bytes == 10_000_000
    assert led.optimizer_paged and led.components["optimizer_states"] == 4000
    assert "(paged)" in str(led)


def test_unload_empties_the_cuda_cache(monkeypatch):
    from qlora_nb.engine import lifecycle

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: calls.append("reset_peak"))
    lifecycle.release_allocator()
    assert calls == ["empty_cache", "reset_peak"]
    calls.clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    lifecycle.release_allocator()
    assert calls == []


@pytest.mark.parametrize("exc", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 14.74 GiB total capacity)"),
    RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"),
    RuntimeError("CUDA error: out of memory"),
])
def test_cuda_oom_messages(monkeypatch, exc):
    from qlora_nb.engine.lifecycle import explain_oom

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: None)
    err = explain_oom(exc, "qlora_nb.train", checkpoint="runs/x/checkpoint-5")
    assert err is not None and "ran out of GPU" in str(err) and "checkpoint-5" in str(err)
    assert "gradient_checkpointing" in str(err)


def test_planner_uses_cuda_terms(monkeypatch):
    from qlora_nb.memory import planner

    cuda = planner.plan("smollm2-135m", device="cuda", gpu="16GB")
    cpu = planner.plan("smollm2-135m", device="cpu", gpu="16GB")
    from qlora_nb.memory.cuda_peak import slack_bytes

    c = cuda.components  # the context outside the allocator + the allocator's slack (cuda_peak.py)
    assert c["overhead"] == planner.CUDA_CONTEXT_BYTES + slack_bytes(c["activations"], c["logits"])
    assert cpu.components["overhead"] == planner.CPU_RUNTIME_BYTES
    assert cpu.components["activations"] > cuda.components["activations"]  # the CPU fit's scale, fp32 dropout
    paged = planner.plan("llama-3-8b", device="cuda", gpu="24GB", optimizer="paged_adamw_8bit")
    assert 0 < paged.paged_bytes <= paged.components["optimizer_states"]  # tensors of >= 1e5 elements


def test_planner_limit_is_the_current_gpu(monkeypatch):
    from types import SimpleNamespace

    from qlora_nb.memory import planner

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    sizes = {0: 16 * 2**30, 1: 80 * 2**30}
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=sizes[i]))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"GPU{i}")
    p = planner.plan("smollm2-135m", device="cuda")
    assert (p.limit_bytes, p.limit_source) == (80 * 2**30, "GPU1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert planner.plan("smollm2-135m", device="cuda").limit_source.startswith("24 GiB")


def test_the_plan_of_a_session_uses_its_last_run(tiny_session):
    """gpu_check compares this plan with the allocator peak of the run: it must describe that run."""
    from types import SimpleNamespace

    from qlora_nb.config import TrainConfig

    run = TrainConfig.from_options({"data": "demo", "batch_size": 2, "cutoff_len": 64,
                                    "optimizer": "paged_adamw_8bit", "gradient_checkpointing": True})
    tiny_session.runs.append(SimpleNamespace(config=run.to_dict()))  # what engine/training/train.py stores
    c = tiny_session.plan(measure=False).config
    assert (c.batch_size, c.seq_len, c.optimizer, c.gradient_checkpointing) == (2, 64, "paged_adamw_8bit", True)
