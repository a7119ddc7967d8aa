"""train.py, written by qlora_nb's %qlora_export: the notebook's training run, for `accelerate launch`.

    accelerate launch --config_file accelerate_config.yaml train.py        # DDP, one process per GPU
    accelerate launch --config_file accelerate_fsdp.yaml train.py          # FSDP-QLoRA, shards the 4-bit base
    accelerate launch --config_file accelerate_cpu.yaml train.py --fsdp    # FSDP2 on the CPU (16-bit base)
    python train.py                                                         # one process

It reads config.yaml beside it: ``load`` holds the LoadConfig and ``train``
the TrainConfig the notebook used, so the run trains with the same model,
quantization, LoRA settings, data, template and schedule. It uses qlora_nb
itself (``qlora_nb.load`` + ``Session.train``) rather than re-implementing the
data pipeline, so templates, completion-only masks and validation behave
exactly as in the notebook. Every process loads the model onto its own device
(GPU ``LOCAL_RANK``, or the CPU with the gloo backend when no GPU is visible);
the Trainer wraps it in DDP (or FSDP) from the environment accelerate sets.
At the end every rank hashes its adapter: under DDP all replicas must hold
identical weights, and rank 0 refuses to finish if they do not.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path


def adapter_digest(state: dict) -> str:
    """sha256 over the adapter tensors (sorted names, fp32 bytes): equal digests mean identical adapters."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _device_for_this_rank(requested: str) -> str:
    """cuda (this rank's GPU made current) when one is visible and allowed, else cpu."""
    import torch

    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes")
    if requested != "cpu" and not use_cpu and torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        return "cuda"
    return "cpu"


def _resolve_data(data, here: Path):
    """Data files copied beside the config are named relative to it."""
    if isinstance(data, str) and not os.path.isabs(data) and (here / data).exists():
        return str(here / data)
    return data


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="qlora_nb training run exported from a notebook.")
    parser.add_argument("--config", default=str(Path(__file__).with_name("config.yaml")),
                        help="config.yaml with `load:` and `train:` sections.")
    parser.add_argument("--output-dir", default=None, help="Where checkpoints and the adapter go.")
    parser.add_argument("--max-steps", type=int, default=None, help="Override train.max_steps.")
    parser.add_argument("--fsdp", action="store_true",
                        help="Shard the base with transformers' FSDP2 at load (the CPU path; needs bits: 16).")
    parser.add_argument("--cpu-offload", action="store_true", help="With --fsdp: keep the shards in host RAM.")
    parser.add_argument("--events-dir", default=None, help="Write each rank's events as JSON lines here.")
    parser.add_argument("--stop-file", default=None, help="All ranks stop at a step boundary once it exists.")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    try:
        return _run(args, rank)
    except BaseException as exc:
        if args.events_dir:  # the launcher names this rank and its error in one paragraph
            from qlora_nb.engine.scale.distributed import write_rank_error

            write_rank_error(Path(args.events_dir), rank, exc)
        raise


def _run(args, rank: int) -> dict:
    import torch
    import yaml
    from peft.utils import get_peft_model_state_dict

    import qlora_nb

    config_path = Path(args.config).resolve()
    here = config_path.parent
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    load_options = dict(config["load"])
    train_options = dict(config["train"])
    world = int(os.environ.get("WORLD_SIZE", "1"))

    load_options["device"] = _device_for_this_rank(load_options.get("device", "auto"))
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and load_options.get("bits", 4) == 4:
        # FSDP flattens parameters of one dtype; 4-bit weights stored as bytes cannot be sharded with the rest
        load_options["quant_storage"] = load_options.get("compute_dtype", "bfloat16")
    if load_options.get("adapter"):
        load_options["adapter"] = _resolve_data(load_options["adapter"], here)
    train_options["data"] = _resolve_data(train_options.get("data"), here)
    out = Path(args.output_dir or train_options.get("output_dir") or here / "output").resolve()
    train_options.update(output_dir=str(out), overwrite=True, n_probes=0, probes=[])
    if args.max_steps is not None:
        train_options["max_steps"] = args.max_steps

    from contextlib import ExitStack

    from qlora_nb.engine.scale.distributed import RankEvents, SharedStop, sharded_loading

    with ExitStack() as stack:
        if args.fsdp:
            stack.enter_context(sharded_loading(world, cpu_offload=args.cpu_offload))
        session = qlora_nb.load(**load_options)
    watchers = []
    if args.events_dir:
        watchers.append(RankEvents(session, Path(args.events_dir), rank, load_options["device"]))
    if args.stop_file:
        watchers.append(SharedStop(session, Path(args.stop_file), load_options["device"]))
    try:
        result = session.train(**train_options)
    finally:
        for w in watchers:
            w.close()

    from qlora_nb.engine.scale.distributed import replicated_state

    digest = adapter_digest(get_peft_model_state_dict(session.model, state_dict=replicated_state(session.model)))
    digests = [digest]
    if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        digests = [None] * world
        torch.distributed.all_gather_object(digests, digest)
    ranks_dir = out / "ranks"
    ranks_dir.mkdir(parents=True, exist_ok=True)
    (ranks_dir / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "world_size": world,
                                                            "adapter_sha256": digest}))
    summary = {
        "world_size": world,
        "device": load_options["device"],
        "strategy": "fsdp" if args.fsdp or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" else
                    ("ddp" if world > 1 else "single"),
        "sharded": bool(getattr(session.model, "is_distributed_loading_by_transformers", False)),
        "interrupted": bool(result.interrupted),
        "checkpoints": sorted(p.name for p in out.glob("checkpoint-*")),
        "adapter_sha256": digests,
        "replicas_in_sync": len(set(digests)) == 1,
        "steps": result.metrics.get("steps"),
        "losses": result.losses,
        "eval_losses": result.eval_losses,
        "adapter_dir": str(out / "adapter"),
    }
    if rank == 0:
        # Session.save adds qlora_nb.json and the model card to the PEFT files training wrote
        session.save(out / "adapter", overwrite=True)
        (out / "run_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        print(json.dumps(summary, indent=2))
        if not summary["replicas_in_sync"]:
            raise SystemExit(f"DDP replicas hold different adapters: {digests}")
    if world > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return summary


if __name__ == "__main__":
    main()
