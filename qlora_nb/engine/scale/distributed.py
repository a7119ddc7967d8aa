"""What one rank of a multi-process run needs: sharded loading, a shared stop, and events on disk.

Two FSDP paths exist because accelerate enables FSDP only for accelerator
devices: on a CPU run its state becomes ``MULTI_CPU`` and ``ACCELERATE_USE_FSDP``
is ignored (the Trainer then wraps the model in DDP), and its plugin refuses
``sync_module_states`` without a GPU. So:

* **GPU** (``accelerate launch --config_file accelerate_fsdp.yaml``): the
  Hugging Face FSDP-QLoRA recipe, FSDP1 through accelerate, 4-bit weights
  stored in the compute dtype (``quant_storage``).
* **CPU, or any 16-bit base** (``train.py --fsdp``): transformers' own FSDP2
  (``DistributedConfig(fsdp_size=N)`` at ``from_pretrained``) shards the base
  across ranks with ``fully_shard`` on a gloo device mesh; the LoRA weights
  added after it are replicated and the Trainer averages their gradients.
  bitsandbytes' ``Params4bit`` does not survive ``fully_shard`` (peft then
  meets a ``DTensor`` without ``compress_statistics``), so this path refuses a
  4-bit base on the CPU with a clear message (measured, torch 2.13, bnb 0.50.2).
"""

from __future__ import annotations

import contextvars
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ...errors import QloraError

_SHARDING: contextvars.ContextVar[dict | None] = contextvars.ContextVar("qlora_nb_sharding", default=None)


@contextmanager
def sharded_loading(world_size: int, cpu_offload: bool = False):
    """Inside it, ``qlora_nb.load`` shards the base model over ``world_size`` ranks (FSDP2)."""
    token = _SHARDING.set({"world_size": int(world_size), "cpu_offload": bool(cpu_offload)})
    try:
        yield
    finally:
        _SHARDING.reset(token)


def sharded_load_kwargs(bits: int) -> dict[str, Any]:
    """``from_pretrained`` keywords for a sharded load, or {} outside :func:`sharded_loading`."""
    spec = _SHARDING.get()
    if not spec:
        return {}
    if bits != 16:
        raise QloraError(f"FSDP2 sharding at load time needs a 16-bit base; this run loads it in {bits}-bit.",
                         where="load option 'bits'",
                         hint="On the CPU use bits: 16 (bitsandbytes' 4-bit weights do not shard there); on GPUs "
                              "use accelerate_fsdp.yaml, the FSDP-QLoRA recipe that stores 4-bit weights in bf16.")
    from transformers.distributed import DistributedConfig

    return {"distributed_config": DistributedConfig(fsdp_size=spec["world_size"],
                                                    fsdp_cpu_offload=spec["cpu_offload"])}


def is_sharded(model) -> bool:
    """True for a model whose base transformers sharded at load (no DDP wrap, checkpoints hold the adapter)."""
    return bool(getattr(model, "is_distributed_loading_by_transformers", False))


def rank_memory(device: str) -> dict[str, float]:
    """This process's memory now: RSS (and the GPU's peak allocation when on CUDA), in bytes."""
    import psutil

    out = {"rss": float(psutil.Process().memory_info().rss)}
    if str(device).startswith("cuda"):
        import torch

        out["gpu_peak"] = float(torch.cuda.max_memory_allocated())
    return out


class RankEvents:
    """One rank's events as JSON lines (rank 0: every event; others: their memory), read by the launcher.

    A file per rank rather than a pipe: the launcher tails them without blocking any rank, and they stay on disk
    as the run's record.
    """

    def __init__(self, session, directory: Path, rank: int, device: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.rank, self.device = rank, device
        self._file = (directory / f"rank{rank}.jsonl").open("a", encoding="utf-8")
        self._unsubscribe = session.events.subscribe(self)

    def write(self, kind: str, **data: Any) -> None:
        record = {"kind": kind, "rank": self.rank, "time": time.time(), **data}
        self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()

    def __call__(self, event: dict) -> None:
        kind = event.get("kind")
        if kind == "step":
            self.write("memory", step=event.get("step"), **rank_memory(self.device))
        if self.rank == 0 and kind in ("train_begin", "step", "eval", "ledger"):
            self.write(**event)

    def close(self) -> None:
        self._unsubscribe()
        self._file.close()


class SharedStop:
    """Stops every rank at the same step boundary once any rank sees ``stop_file``.

    Each rank checks the file after each optimizer step and the ranks agree with one all-reduce (max), so no rank
    leaves a collective its peers are still in; the engine's stop then saves one checkpoint.
    """

    def __init__(self, session, stop_file: Path, device: str) -> None:
        self.session, self.stop_file, self.device = session, stop_file, device
        self._unsubscribe = session.events.subscribe(self)

    def __call__(self, event: dict) -> None:
        if event.get("kind") != "poll":
            return
        import torch
        import torch.distributed as dist

        seen = self.stop_file.exists()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flag = torch.tensor([1.0 if seen else 0.0], device=self.device if self.device != "cpu" else "cpu")
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            seen = bool(flag.item())
        if seen:
            self.session.stop_requested = True

    def close(self) -> None:
        self._unsubscribe()


def write_rank_error(directory: Path, rank: int, exc: BaseException) -> None:
    """The rank's failure as one JSON record, so the launcher can name the rank and the cause in one paragraph."""
    directory.mkdir(parents=True, exist_ok=True)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    record = {"rank": rank, "type": type(exc).__name__, "message": text[:500], "pid": os.getpid()}
    (directory / f"rank{rank}.error.json").write_text(json.dumps(record), encoding="utf-8")


def replicated_state(model) -> dict | None:
    """The model's state without the sharded base (``DTensor``) entries, or None for an unsharded model.

    peft gathers every ``DTensor`` of the whole model when it saves (a collective each rank must join), although
    the LoRA weights added after ``fully_shard`` are plain replicated tensors. Handing it this state instead lets
    rank 0 save the adapter alone.
    """
    if not is_sharded(model):
        return None
    from torch.distributed.tensor import DTensor

    return {k: v for k, v in model.state_dict().items() if not isinstance(v, DTensor)}


def adapter_save_kwargs(model) -> dict:
    """Keywords for ``PeftModel.save_pretrained``: the replicated state under a sharded base, else nothing."""
    state = replicated_state(model)
    return {} if state is None else {"state_dict": state}
