"""``Session.export``: the notebook's run as a standalone train.py + config for ``accelerate launch``.

The folder is self-contained: local data files are copied into ``data/``,
config.yaml holds the same LoadConfig and TrainConfig the notebook used, and
three accelerate configs cover the cases users meet: DDP on several GPUs,
FSDP-QLoRA when the 4-bit model must be sharded, and a CPU config (torchrun
launcher + gloo) that runs the same script on a laptop or in CI. accelerate's
``--cpu`` flag starts one process unless MPI is set up, which is why the CPU
config uses the multi-process launcher instead.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...command_options import ExportOptions
from ...config import TrainConfig
from ...errors import QloraError
from ...fileio import atomic_dir

if TYPE_CHECKING:
    from ..session import Session

# The standalone train.py written out (read as text, not imported: it is a script, not part of the engine).
SCRIPT_TEMPLATE = Path(__file__).with_name("script_template.py")

def _accelerate_config(distributed_type: str, num_processes: int, extra: dict[str, Any] | None = None):
    """accelerate's own config object (what ``accelerate config`` writes), for ``to_yaml_file``."""
    from accelerate.commands.config.config_args import ClusterConfig

    return ClusterConfig(
        compute_environment="LOCAL_MACHINE", distributed_type=distributed_type, num_machines=1, machine_rank=0,
        num_processes=num_processes, gpu_ids="all", main_training_function="main",
        mixed_precision="no",  # the Trainer sets bf16/fp16 from the load config's compute_dtype
        rdzv_backend="static", same_network=True, use_cpu=False, debug=False, downcast_bf16="no",
        tpu_use_cluster=False, tpu_use_sudo=False, tpu_env=[], **(extra or {}),
    )


def fsdp_settings(layer_class: str) -> dict[str, Any]:
    """FSDP-QLoRA settings from the Hugging Face guide (FSDP1; the Trainer wraps LoRA layers separately)."""
    return {
        "fsdp_config": {
            "fsdp_version": 1,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_transformer_layer_cls_to_wrap": layer_class,
            "fsdp_backward_prefetch": "BACKWARD_PRE",
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_forward_prefetch": False,
            "fsdp_offload_params": False,
            "fsdp_sharding_strategy": "FULL_SHARD",
            "fsdp_state_dict_type": "SHARDED_STATE_DICT",
            "fsdp_sync_module_states": True,
            "fsdp_use_orig_params": False,
        }
    }


def _decoder_layer_class(session: Session) -> str:
    for module in session.model.get_base_model().modules():
        name = type(module).__name__
        if name.endswith("DecoderLayer"):
            return name
    return "LlamaDecoderLayer"


def train_options(session: Session, overrides: dict[str, Any]) -> dict[str, Any]:
    """The last run's TrainConfig (or the defaults) with ``overrides``, validated, data made portable."""
    last = session.runs[-1].config if session.runs else {}
    last = last.to_dict() if hasattr(last, "to_dict") else dict(last or {})
    merged = {k: v for k, v in last.items() if k not in ("output_dir", "resume", "overwrite")}
    merged.update({TrainConfig._canonical(k): v for k, v in overrides.items()})  # lr= replaces learning_rate
    if callable(merged.get("eval_metric")):  # config.yaml holds text: a function cannot reach the script's ranks
        raise QloraError("eval_metric is a Python function, which cannot be written into config.yaml for the "
                         "exported/launched train.py.", where="train option 'eval_metric'",
                         hint="Use a named metric there (exact_match, contains, json_match), or train in the "
                              "notebook with %%qlora_train to score with your function.")
    data = merged.get("data")
    if data is None or (isinstance(data, str) and data.startswith("<") and data.endswith(">")):
        raise QloraError("the exported script needs data it can read from a file: "
                         + ("this session has not trained yet." if data is None
                            else f"the last run trained on an in-memory {data[1:-1]}."),
                         where="export option 'data'",
                         hint="Pass data=path.jsonl (or --data for %qlora_export); save a DataFrame first with "
                              "df.to_json('data.jsonl', orient='records', lines=True).")
    cfg = TrainConfig.from_options(merged)  # validates every option now, not on the cluster
    return cfg.to_dict()


def _readme(session: Session, num_processes: int, fsdp: bool, data_note: str) -> str:
    cfg = session.config
    first = "accelerate_fsdp.yaml" if fsdp else "accelerate_config.yaml"
    return f"""# Training run exported from a qlora_nb notebook

Model `{cfg.model}` ({cfg.bits}-bit{' ' + cfg.quant.upper() if cfg.bits == 4 else ''}), LoRA r={cfg.r},
alpha={cfg.alpha:g}. `config.yaml` holds the notebook's load (`load:`) and training (`train:`) settings;
{data_note}

## Run it

```bash
pip install qlora_nb accelerate
# {num_processes} GPUs on this machine, data-parallel (DDP): each GPU holds the 4-bit model and trains on its
# share of every batch; gradients are averaged, so all replicas keep identical adapters.
accelerate launch --config_file {first} --num_processes {num_processes} train.py
# the same thing without a config file
accelerate launch --multi_gpu --num_processes {num_processes} train.py
# one process (one GPU or the CPU)
python train.py --max-steps 10
# CPU only, two processes with the gloo backend (a smoke test of the distributed path)
accelerate launch --config_file accelerate_cpu.yaml train.py --max-steps 3
```

The effective batch is `batch_size x gradient_accumulation_steps x num_processes`; with N processes each
optimizer step sees N times the rows of the notebook run, so lower `max_steps` (or the batch size) in
`config.yaml` to train on the same number of rows.

**FSDP-QLoRA** (`accelerate_fsdp.yaml`): when the 4-bit model does not fit on one GPU, FSDP shards it. The
script then stores the 4-bit weights in `{cfg.compute_dtype}` (`bnb_4bit_quant_storage`, so FSDP can flatten
them with the other weights), and the Trainer wraps the LoRA layers in their own FSDP units. Settings follow the
Hugging Face FSDP-QLoRA guide (FULL_SHARD, `use_orig_params: false`, `cpu_ram_efficient_loading`,
`sync_module_states`).

**Note on `--cpu`:** accelerate's `--cpu` flag starts a single process unless MPI is configured; use
`accelerate_cpu.yaml` (or `--multi_gpu` on a machine without GPUs), which starts N processes with torchrun, and
the script trains on the CPU with the gloo backend. On a machine with GPUs, force the CPU with
`CUDA_VISIBLE_DEVICES=` or `device: cpu` under `load:` in config.yaml.

## On a cluster

Run one `accelerate launch` per node with `--num_machines M --machine_rank $RANK --main_process_ip HOST
--main_process_port 29500 --num_processes (M x GPUs per node)`. Under SLURM, for example:

```bash
srun accelerate launch --config_file {first} --num_machines $SLURM_NNODES \\
     --machine_rank $SLURM_NODEID --main_process_ip $(scontrol show hostnames | head -n1) \\
     --num_processes $((SLURM_NNODES * {num_processes})) train.py
```

Every node needs qlora_nb installed and the model readable (a hub id, or the same local path on every node).

## Outputs

`output/adapter/` is a standard PEFT adapter (safetensors) with `qlora_nb.json` and a model card; load it back in
the notebook with `%qlora_load {cfg.model} --adapter output/adapter` or `%qlora_load_adapter output/adapter`.
`output/run_summary.json` lists the losses and one adapter hash per process (they must be equal under DDP);
`output/ranks/` holds each process's hash.
"""


def export_script(session: Session, directory: str | Path, overwrite: bool = False, **options: Any) -> Path:
    """Write train.py, config.yaml, accelerate configs, copied data and a README into ``directory``.

    Options: :class:`~qlora_nb.command_options.ExportOptions` (``num_processes``, ``fsdp``: the README leads with the
    FSDP config, ``data``: a file to train on instead of the last run's data) and any
    :class:`~qlora_nb.config.TrainConfig` field to override.
    """
    import yaml

    export = ExportOptions.from_options({k: options.pop(k) for k in ("num_processes", "fsdp") if k in options})
    num_processes, fsdp = export.num_processes, export.fsdp
    train = train_options(session, options)
    load = {**session.config.to_dict(), "device": "auto"}
    model_path = Path(str(load["model"])).expanduser()
    if model_path.exists():  # a local folder: absolute, so the script runs from anywhere
        load["model"] = str(model_path.resolve())
    if load.get("adapter"):
        load["adapter"] = str(Path(load["adapter"]).expanduser().resolve())
    from ..arguments import protected_folders

    target = Path(directory).expanduser()
    with atomic_dir(target, overwrite=overwrite, kind="export", protected=protected_folders(session)) as tmp:
        data_note = "the data is named as in the notebook."
        data = train.get("data")
        if isinstance(data, str) and Path(data).expanduser().is_file():
            src = Path(data).expanduser()
            (tmp / "data").mkdir()
            shutil.copy2(src, tmp / "data" / src.name)
            train["data"] = f"data/{src.name}"
            data_note = f"the training data was copied to `data/{src.name}`."
        train["output_dir"] = None  # default: output/ beside config.yaml
        (tmp / "config.yaml").write_text(yaml.safe_dump({"load": load, "train": train}, sort_keys=False),
                                         encoding="utf-8")
        (tmp / "train.py").write_text(SCRIPT_TEMPLATE.read_text(encoding="utf-8"), encoding="utf-8")
        configs = {
            "accelerate_config.yaml": _accelerate_config("MULTI_GPU", num_processes),
            "accelerate_fsdp.yaml": _accelerate_config("FSDP", num_processes,
                                                       fsdp_settings(_decoder_layer_class(session))),
            "accelerate_cpu.yaml": _accelerate_config("MULTI_GPU", 2),
        }
        for name, cfg in configs.items():
            cfg.to_yaml_file(tmp / name)
        (tmp / "README.md").write_text(_readme(session, num_processes, fsdp, data_note), encoding="utf-8")
    return target
