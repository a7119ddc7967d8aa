"""Training settings that cannot do what was asked are refused (or warned about) before the first step.

Issue 15, class 5 and 7: a run whose whole schedule is warm-up trains at a
zero learning rate and reports "done"; probes that are not text fail at the
first evaluation, minutes in; an output_dir that is a file or unwritable
fails at the first save; a resumed run whose data changed, or whose
max_steps is below the checkpoint, continues something other than what the
user thinks. Each is caught here, before any work, with the setting named.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...errors import QloraError, QloraWarning
from ...overwrite import MARKER, check_target, check_writable, is_toolkit_folder, write_marker


def check_probes(cfg) -> None:
    """Every probe must be text: it is generated from at each evaluation."""
    for i, p in enumerate(cfg.probes, start=1):
        if not isinstance(p, str) or not p.strip():
            shown = repr(p) if isinstance(p, str) else f"a {type(p).__name__} ({p!r})"[:80]
            raise QloraError(f"probe {i} is {shown}, not a prompt text.", where="train option 'probes'",
                             hint='Write probes as a list of texts, e.g. probes: ["What is 2+2?", "Say hi"].')


def check_metric(cfg) -> None:
    """A metric callable must be callable as ``f(prediction, reference)``: refused before any work, not at an eval."""
    if cfg.eval_metric is not None:
        from ...data.scoring import resolve

        resolve(cfg.eval_metric)


def check_schedule(cfg, planned: int, warmup_given: bool):
    """Refuse a run that is all warm-up; a *default* warm-up longer than a short run shrinks to fit it.

    Returns the config the run uses (the default warm-up of 5 steps becomes a
    tenth of a run of 5 steps or fewer, so ``max_steps: 1`` still learns).
    """
    if cfg.warmup_steps < planned or cfg.lr_scheduler_type == "constant":
        return cfg
    if not warmup_given:
        return replace(cfg, warmup_steps=planned // 10)
    raise QloraError(f"warmup_steps={cfg.warmup_steps} covers the whole run of {planned} step(s): the learning rate "
                     "would still be warming up (starting at 0) when training ends, so the adapter would barely "
                     "change.", where="train option 'warmup_steps'",
                     hint=f"Use fewer warm-up steps (e.g. warmup_steps: {max(0, planned // 10)}) or more max_steps.")


def data_fingerprint(rows: list[dict[str, str]], val_rows: list[dict[str, str]]) -> str:
    """A digest of the exact texts trained on, whatever file or object they came from."""
    digest = hashlib.sha256()
    for part in (rows, val_rows):
        digest.update(json.dumps(part, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def prepare_output_dir(session, cfg, out: Path) -> None:
    """A fresh run's output_dir: a folder (not a file), writable, empty or an earlier run (``overwrite``)."""
    from ..arguments import protected_folders

    where = "train option 'output_dir'"
    if out.exists() and not out.is_dir():
        raise QloraError(f"output_dir {str(out)!r} is a file, not a folder.", where=where,
                         hint="Choose a folder path for the run (e.g. runs/my-run); the file is left as it is.")
    check_writable(out, where)
    if cfg.resume:
        return
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise QloraError(f"output_dir {str(out)!r} already holds a run.", where=where,
                             hint="Use resume: true to continue it, overwrite: true to replace it, or another "
                                  "output_dir/run_name.")
        if not is_toolkit_folder(out):
            check_target(out, overwrite=True, flag=where, protected=protected_folders(session))
    else:
        check_target(out, overwrite=False, flag=where, protected=protected_folders(session))


def mark_run(out: Path, fingerprint: str, cfg) -> None:
    """Write the run's marker: the toolkit wrote this folder, from these rows, for this many steps."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_marker(out, "run")
        marker = out / MARKER
        info = json.loads(marker.read_text(encoding="utf-8"))
        info.update({"data_sha256": fingerprint, "data": str(cfg.data) if isinstance(cfg.data, (str, Path)) else
                     type(cfg.data).__name__})
        marker.write_text(json.dumps(info) + "\n", encoding="utf-8")
    except OSError as exc:
        raise QloraError(f"output_dir {str(out)!r} cannot be written ({exc.strerror or exc}).",
                         where="train option 'output_dir'", hint="Choose a folder you can write to.") from None


def check_resume(out: Path, checkpoint: str, fingerprint: str, planned: int) -> None:
    """Say when a resumed run would continue on different rows, or has nothing left to do."""
    state: dict[str, Any] = {}
    try:
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    step, old_max = state.get("global_step"), state.get("max_steps")
    if isinstance(step, int) and planned <= step:
        raise QloraError(f"the checkpoint {checkpoint} is already at step {step}, and this run stops at step "
                         f"{planned}, so resuming would train nothing.", where="train option 'max_steps'",
                         hint=f"Raise max_steps above {step} to continue, or train without resume to start over.")
    if isinstance(old_max, int) and planned < old_max:
        warnings.warn(f"resuming with {planned} steps where the checkpoint's run planned {old_max}: the learning "
                      "rate schedule is recomputed for the shorter run.", QloraWarning, stacklevel=4)
    try:
        saved = json.loads((out / MARKER).read_text(encoding="utf-8")).get("data_sha256")
    except (OSError, ValueError, AttributeError):
        saved = None
    if saved and saved != fingerprint:
        warnings.warn(f"the training data changed since {out} was started (its rows differ from the ones the "
                      "checkpoint was trained on); resuming continues the schedule on the new rows.", QloraWarning,
                      stacklevel=4)
