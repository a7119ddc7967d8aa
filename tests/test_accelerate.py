"""The exported train.py runs for real under `accelerate launch` with two CPU processes (gloo, DDP).

accelerate's ``--cpu`` flag starts a single process unless MPI is set up, so the
export's ``accelerate_cpu.yaml`` uses the torchrun launcher; the script trains on
the CPU with gloo because no GPU is visible. The 4-bit base works under DDP on
CPU: bitsandbytes' packed uint8 weights are frozen, DDP only broadcasts them once
and all-reduces the fp32 LoRA gradients.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import qlora_nb
from qlora_nb.errors import QloraError

ROWS = [{"prompt": f"Q{i}: add {i} and {i + 1}?", "completion": f" {2 * i + 1}"} for i in range(16)]


def _launch(job: Path, *extra: str) -> subprocess.CompletedProcess:
    root = str(Path(qlora_nb.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_cpu.yaml",
           "--main_process_port", "29517", "train.py", *extra]
    return subprocess.run(cmd, cwd=job, env=env, capture_output=True, text=True, timeout=400)


@pytest.mark.slow
def test_export_runs_ddp_on_two_cpu_processes_and_loads_back(tiny_model_dir, write_jsonl, tmp_path):
    import torch
    from safetensors.torch import load_file

    data = write_jsonl(ROWS)
    s = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0)
    job = s.export(tmp_path / "job", data=str(data), max_steps=3, batch_size=2, val_split=0, warmup_steps=0,
                   learning_rate=1e-2, group_by_length=False)
    assert {"train.py", "config.yaml", "accelerate_config.yaml", "accelerate_fsdp.yaml", "README.md"} <= {
        p.name for p in job.iterdir()}
    assert (job / "data" / data.name).read_text() == data.read_text()

    proc = _launch(job)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((job / "output" / "run_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3 and summary["device"] == "cpu"
    ranks = [json.loads((job / "output" / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["adapter_sha256"] == ranks[1]["adapter_sha256"]  # DDP: both replicas hold the same adapter
    assert summary["replicas_in_sync"] and len(summary["losses"]) == 3

    # the saved adapter is the one both ranks hold, and it was trained (B moved away from zero)
    sys.path.insert(0, str(job))
    try:
        from train import adapter_digest
    finally:
        sys.path.remove(str(job))
    saved = load_file(str(job / "output" / "adapter" / "adapter_model.safetensors"))
    assert adapter_digest(saved) == ranks[0]["adapter_sha256"]
    assert any(torch.count_nonzero(v) for k, v in saved.items() if "lora_B" in k)

    back = qlora_nb.load(str(tiny_model_dir), adapter=str(job / "output" / "adapter"))
    assert back.adapters["default"]["source"] == str(job / "output" / "adapter")
    ids = s.tokenizer(["Q3: add 3 and 4?"], return_tensors="pt")
    with torch.no_grad():
        trained = back.model(**ids).logits
        base = s.model(**ids).logits  # s never trained: its adapter is the identity
    assert (trained.float() - base.float()).abs().max() > 1e-3


def test_export_writes_the_notebook_settings_and_configs(tiny_model_dir, write_jsonl, tmp_path):
    import yaml

    data = write_jsonl(ROWS)
    s = qlora_nb.load(str(tiny_model_dir), r=8, alpha=16, dropout=0.1)
    with pytest.raises(QloraError, match="has not trained yet"):
        s.export(tmp_path / "nodata")
    job = s.export(tmp_path / "job", data=str(data), num_processes=4, max_steps=7)
    cfg = yaml.safe_load((job / "config.yaml").read_text())
    assert cfg["load"]["r"] == 8 and cfg["load"]["alpha"] == 16 and cfg["load"]["bits"] == 4
    assert cfg["train"]["max_steps"] == 7 and cfg["train"]["data"] == f"data/{data.name}"
    ddp = yaml.safe_load((job / "accelerate_config.yaml").read_text())
    assert ddp["distributed_type"] == "MULTI_GPU" and ddp["num_processes"] == 4
    fsdp = yaml.safe_load((job / "accelerate_fsdp.yaml").read_text())
    assert fsdp["distributed_type"] == "FSDP"
    assert fsdp["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    assert fsdp["fsdp_config"]["fsdp_use_orig_params"] is False
    readme = (job / "README.md").read_text()
    assert "accelerate launch --config_file accelerate_config.yaml --num_processes 4 train.py" in readme
    with pytest.raises(QloraError, match="already exists"):
        s.export(tmp_path / "job", data=str(data))
    with pytest.raises(QloraError, match="unknown train option"):
        s.export(tmp_path / "job2", data=str(data), max_stepz=3)


def test_fsdp_quant_storage_loads_4bit_weights_in_a_float_dtype(tiny_model_dir):
    """What the script switches on under FSDP: packed 4-bit weights stored as bf16, still 4 bits per weight."""
    import bitsandbytes as bnb
    import torch

    s = qlora_nb.load(str(tiny_model_dir), quant_storage="bfloat16")
    layers = [m for m in s.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.weight.dtype == torch.bfloat16 for m in layers)
    w = layers[0].weight
    assert w.numel() * w.element_size() * 2 == layers[0].in_features * layers[0].out_features
