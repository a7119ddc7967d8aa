"""Where a run writes: its output folder, the checkpoint to resume, and the final adapter folder."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ...config import TrainConfig
from ...errors import QloraError
from ...fileio import atomic_dir, write_text_atomic
from ..model.adapters import flatten_adapter_folder
from ..scale.distributed import adapter_save_kwargs


def output_dir(session, cfg: TrainConfig) -> tuple[Path, str]:
    if cfg.output_dir:
        out = Path(cfg.output_dir).expanduser()
        return out, cfg.run_name or out.name
    if cfg.resume and not cfg.run_name:
        previous = [r for r in session.runs if getattr(r, "output_dir", None)]
        if previous:
            out = Path(previous[-1].output_dir)
            return out, out.name
        raise QloraError("resume: true but no output_dir is given and this session has no earlier run.",
                         where="train option 'resume'", hint="Add `output_dir: runs/<name>` of the run to resume.")
    name = cfg.run_name or default_run_name(Path("runs"))
    return Path("runs") / name, name


_ISSUED: set[str] = set()  # default names handed out in this process (a run's folder may not exist yet)


def default_run_name(root: Path) -> str:
    """``run-<date>-<time>``, with ``-2``, ``-3``… when that name is taken (issue 25, class 8).

    Run All, a script or the studio's Train right after a cell start two runs in
    one second; with the same name the second was refused with advice (resume,
    overwrite) that acted on the first run.
    """
    base = time.strftime("run-%Y%m%d-%H%M%S")
    name, k = base, 1
    while name in _ISSUED or (root / name).exists():
        k += 1
        name = f"{base}-{k}"
    _ISSUED.add(name)
    return name


def find_checkpoint(out: Path) -> str:
    from ..lifecycle import last_complete_checkpoint

    ckpt = last_complete_checkpoint(out)  # skips a checkpoint torn by an interrupt during its save
    if ckpt is None:
        raise QloraError(f"no checkpoint to resume in {str(out)!r}.", where="train option 'resume'",
                         hint="Checkpoints are written when a run is interrupted or every save_steps; "
                              "train without resume to start over.")
    return ckpt


def _is_main_process() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def save_run(session, cfg: TrainConfig, out: Path, metrics: dict[str, Any], prep: Any) -> Path:
    """The adapter (safetensors + adapter_config.json) and the run's config, swapped in atomically."""
    name = session.active_adapter
    target = out / "adapter"
    if not _is_main_process():  # under DDP (exported train.py) every rank holds the same adapter; rank 0 writes
        return target
    with atomic_dir(target, overwrite=True, kind="run adapter") as tmp:
        session.model.save_pretrained(str(tmp), safe_serialization=True, selected_adapters=[name],
                                   **adapter_save_kwargs(session.model))  # a sharded base: rank 0 alone
        flatten_adapter_folder(tmp, name)
        train = cfg.to_dict()
        if callable(cfg.eval_metric):  # a function is saved by its name (the run history shows it)
            from ...data.scoring import metric_name

            train["eval_metric"] = metric_name(cfg.eval_metric)
        run = {"train": train, "load": session.config.to_dict(), "adapter_name": name,
               "template": prep.template.text, "chat_format": prep.chat, "base_model": str(session.model_path),
               "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, type(None)))}}
        (tmp / "train_config.json").write_text(json.dumps(run, indent=2, default=str), encoding="utf-8")
    write_text_atomic(out / "train_config.json", json.dumps(run, indent=2, default=str))
    return target


def save_state(trainer, out: Path) -> None:
    """The Trainer's own ``trainer_state.json`` (``log_history``: every logged step and eval) at the run's top.

    Checkpoints hold one too, but only when one was saved; this copy is what the run history
    (:mod:`.runs`) reads, so a run without checkpoints is listed with its curves.
    """
    import os

    if not _is_main_process():
        return
    tmp = out / ".trainer_state.json.tmp"
    trainer.state.save_to_json(str(tmp))
    os.replace(tmp, out / "trainer_state.json")
