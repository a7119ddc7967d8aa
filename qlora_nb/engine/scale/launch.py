"""``Session.launch``: the session's training run on N processes, started and watched from the notebook.

It runs the exported train.py (:mod:`.accelerate_export`) under an ``accelerate
launch`` subprocess rather than accelerate's ``notebook_launcher``: that one
forks the kernel, and forking a process that already holds a model, OpenMP
threads or a CUDA context is unsafe (and ``notebook_launcher`` refuses once CUDA
is initialised). A subprocess starts clean ranks, in their own process group,
so they can all be ended together and none outlives the cell.

The ranks write JSON lines (:class:`.distributed.RankEvents`); this module tails
them and re-emits rank 0's events on ``session.events``, so the dashboard draws
the live loss curve exactly as for ``%%qlora_train``, plus one ``rank_memory``
event per rank and step. Stop (or an interrupt in the notebook) creates the
stop file; every rank then stops at the same step boundary and one checkpoint is
written. At the end the adapter is loaded into the session.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import QloraError

POLL_S = 0.2
LAUNCH_ONLY = ("port", "directory", "overwrite")  # launch's own options; the rest are TrainConfig fields


@dataclass
class LaunchResult:
    """What a launched run left: the losses rank 0 logged, each rank's memory, and the loaded adapter's name."""

    processes: int
    strategy: str
    job_dir: Path
    adapter: str | None
    summary: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    rank_memory: dict[int, dict[str, float]] = field(default_factory=dict)
    interrupted: bool = False
    checkpoints: list[str] = field(default_factory=list)

    @property
    def losses(self) -> list[float]:
        return [h["loss"] for h in self.history if "loss" in h]

    def __repr__(self) -> str:
        state = "interrupted" if self.interrupted else "done"
        last = f", loss {self.losses[-1]:.4f}" if self.losses else ""
        return (f"<LaunchResult {state}: {self.processes} processes ({self.strategy}), "
                f"{len(self.losses)} logged steps{last}, adapter {self.adapter!r}>")


def check_port(port: int) -> None:
    """A clear error when the rendezvous port is taken (torch's own message is a page of c10d store errors)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise QloraError(f"port {port} is already in use, so the ranks cannot meet there.", where="--port",
                             hint="Pass another --port (e.g. 29600), or stop the run that holds it.") from None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_launch(session, processes: Any, fsdp: bool, cpu_offload: bool) -> tuple[int, str]:
    """Refuse what cannot run, before any process starts; returns (processes, device kind)."""
    import torch

    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise QloraError(f"processes must be a whole number of at least 1, got {processes!r}.", where="--processes")
    on_gpu = str(session.device).startswith("cuda")
    devices = torch.cuda.device_count() if on_gpu else (os.cpu_count() or 1)
    kind = "GPUs" if on_gpu else "CPU cores"
    if processes > devices:
        raise QloraError(f"{processes} processes asked for, but this machine has {devices} {kind}.",
                         where="--processes", hint=f"Use --processes {devices} or fewer (one per device).")
    cfg = session.config
    if cpu_offload and not fsdp:
        raise QloraError("CPU offload moves FSDP's shards to host RAM; it needs --fsdp.", where="--cpu-offload",
                         hint="Add --fsdp, or drop --cpu-offload.")
    if fsdp and cfg.bits == 8:
        raise QloraError("FSDP cannot shard bitsandbytes' 8-bit weights (Int8Params keep their own row statistics).",
                         where="--fsdp", hint="Load the model 4-bit (the FSDP-QLoRA recipe) or 16-bit, or use DDP.")
    if fsdp and cfg.dora:
        raise QloraError("DoRA with FSDP is not supported here: the magnitude vector needs the full base weight, "
                         "which FSDP holds only one layer at a time.", where="--fsdp",
                         hint="Train plain LoRA (dora: false) under FSDP, or DoRA with DDP (no --fsdp).")
    if fsdp and not on_gpu and cfg.bits != 16:
        raise QloraError(f"FSDP on the CPU needs a 16-bit base; this session is {cfg.bits}-bit. bitsandbytes' "
                         "4-bit weights do not shard on the CPU (its Params4bit becomes a DTensor peft cannot "
                         "wrap).", where="--fsdp",
                         hint="Load with --bits 16 for FSDP on the CPU, or use DDP (no --fsdp), which runs 4-bit.")
    return processes, "gpu" if on_gpu else "cpu"


def _command(job: Path, processes: int, port: int, fsdp: bool, cpu_offload: bool, kind: str) -> list[str]:
    if kind == "gpu" and fsdp:
        config = "accelerate_fsdp.yaml"  # the FSDP-QLoRA recipe through accelerate (FSDP1)
    else:
        config = "accelerate_config.yaml" if kind == "gpu" else "accelerate_cpu.yaml"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config,
           "--num_processes", str(processes), "--main_process_port", str(port), "train.py",
           "--events-dir", "events", "--stop-file", "STOP"]
    if kind == "cpu" and fsdp:
        cmd.append("--fsdp")  # transformers' FSDP2 at load (see engine/scale/distributed.py)
    if cpu_offload and kind == "gpu":
        _set_offload(job / config)
    elif cpu_offload:
        cmd.append("--cpu-offload")
    return cmd


def _set_offload(config: Path) -> None:
    import yaml

    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    data.setdefault("fsdp_config", {})["fsdp_offload_params"] = True
    config.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def _environment(processes: int) -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # N ranks share the cores: more OpenMP threads than cores makes each rank ~20x slower (GUIDE §5)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    return env


class _Tail:
    """New complete JSON lines of one file since the last read."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        out = []
        for line in data[:end].splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def _end_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the launcher's whole group, then SIGKILL what is left: no rank may outlive the cell."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            if proc.poll() is None:
                time.sleep(0.1)
            else:
                time.sleep(0.05)


def rank_failure(events_dir: Path, log: Path, returncode: int) -> QloraError:
    """One paragraph naming the rank that failed first and why."""
    records = sorted(events_dir.glob("rank*.error.json"))
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    root = re.search(r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", text, re.S)
    first = None
    for path in records:  # a rank that raised wrote its error; peers that lost it only report a broken link
        rec = json.loads(path.read_text(encoding="utf-8"))
        if first is None or "Connection" not in rec.get("message", ""):
            first = rec
            if "Connection" not in rec.get("message", ""):
                break
    if root and (first is None or "Connection" in first.get("message", "")):
        rank, code = int(root.group(1)), int(root.group(2))
        why = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        return QloraError(f"rank {rank} {why}; the other ranks were stopped and no adapter was loaded.",
                          where="%qlora_launch", hint=f"The ranks' output is in {log}. Signal 9 is usually the "
                                                      "out-of-memory killer: fewer processes or a smaller batch.")
    if first is not None:
        return QloraError(f"rank {first['rank']} failed with {first['type']}: {first['message']} The other ranks "
                          "were stopped and no adapter was loaded.", where="%qlora_launch",
                          hint=f"The ranks' full output is in {log}.")
    tail = " ".join(text.strip().splitlines()[-3:])[-400:]
    return QloraError(f"the launcher exited with status {returncode} before any rank reported: {tail}",
                      where="%qlora_launch", hint=f"The full output is in {log}.")


def _removed(job: Path, log: Path, error: QloraError) -> QloraError:
    """The auto-named job folder of a launch that never reached a step is removed; its log's tail goes in the error."""
    import shutil

    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    tail = " | ".join(line.strip() for line in text.strip().splitlines()[-6:] if line.strip())[-600:]
    shutil.rmtree(job, ignore_errors=True)
    hint = f"It failed before its first step, so its folder {job} was removed; the ranks' last output: {tail}" \
        if tail else f"It failed before its first step, so its folder {job} was removed."
    return QloraError(error.message, where=error.where, hint=hint)


def launch(session, processes: int = 2, fsdp: bool = False, cpu_offload: bool = False, port: int | None = None,
           directory: str | Path | None = None, overwrite: bool = False, on_event=None,
           **train_options: Any) -> LaunchResult:
    """Train the session's configuration on ``processes`` ranks; options are TrainConfig fields (as for train)."""
    processes, kind = check_launch(session, processes, bool(fsdp), bool(cpu_offload))
    if port is None:
        port = free_port()
    elif isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise QloraError(f"port must be a number from 1 to 65535, got {port!r}.", where="--port")
    check_port(port)
    name = time.strftime("launch-%Y%m%d-%H%M%S")
    job = Path(directory).expanduser() if directory else Path("runs") / name  # relative: the notebook's folder
    job = session.export(job, overwrite=overwrite, num_processes=processes, fsdp=bool(fsdp), **train_options)
    job = job.resolve()  # the ranks run inside it; the kernel keeps reading it wherever its cwd goes
    events_dir, log = job / "events", job / "launch.log"
    cmd = _command(job, processes, port, bool(fsdp), bool(cpu_offload), kind)
    unsubscribe = session.events.subscribe(on_event) if on_event is not None else None
    session.stop_requested = False
    history: list[dict[str, Any]] = []
    memory: dict[int, dict[str, float]] = {}
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, cwd=job, env=_environment(processes), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own group: ended together, deaf to the kernel's SIGINT
    try:
        stopping = _watch(session, proc, events_dir, history, memory)
    finally:
        _end_process_group(proc)  # a launcher that exited can leave a rank behind: end the whole group
        if unsubscribe:
            unsubscribe()
    if proc.returncode != 0:
        error = rank_failure(events_dir, log, proc.returncode)
        if directory is None and not history:  # failed before its first step: leave no runs/launch-* behind
            error = _removed(job, log, error)
        raise error
    summary = json.loads((job / "output" / "run_summary.json").read_text(encoding="utf-8"))
    adapter = session.load_adapter(job / "output" / "adapter", name=name)
    strategy = "fsdp" if fsdp else "ddp" if processes > 1 else "single"
    result = LaunchResult(processes=processes, strategy=strategy, job_dir=job, adapter=adapter, summary=summary,
                          history=history, rank_memory=memory, interrupted=stopping or summary.get("interrupted", False),
                          checkpoints=summary.get("checkpoints", []))
    session.events.emit("train_end", steps=summary.get("steps"), interrupted=result.interrupted,
                        stopped_early=False, adapter_dir=str(job / "output" / "adapter"),
                        checkpoint=str(job / "output" / result.checkpoints[-1]) if result.checkpoints else None,
                        metrics={"processes": processes, "strategy": strategy})
    return result


def _watch(session, proc: subprocess.Popen, events_dir: Path, history: list, memory: dict) -> bool:
    """Relay the ranks' events until the launcher exits; an interrupt or Stop asks every rank to stop."""
    tails: dict[int, _Tail] = {}
    stopping = False
    while True:
        done = proc.poll() is not None
        try:
            for path in sorted(events_dir.glob("rank*.jsonl")):
                rank = int(path.stem[4:])
                for event in tails.setdefault(rank, _Tail(path)).read():
                    _relay(session, event, history, memory)
            if session.stop_requested and not stopping:
                stopping = True
                (events_dir.parent / "STOP").touch()
            if done:
                return stopping
            time.sleep(POLL_S)
        except KeyboardInterrupt:
            if stopping:  # a second interrupt: end the ranks now
                raise QloraError("stopped at once on a second interrupt; the ranks were ended without a final "
                                 "checkpoint.", where="%qlora_launch",
                                 hint="Interrupt once to stop at a step boundary with a checkpoint.") from None
            stopping = True
            (events_dir.parent / "STOP").touch()
            print("qlora_nb: asking every rank to stop at the next step boundary (one checkpoint).", file=sys.stderr)


def _relay(session, event: dict, history: list, memory: dict) -> None:
    event = dict(event)
    kind, rank = event.pop("kind", None), event.pop("rank", 0)
    event.pop("time", None)
    if kind == "memory":
        memory[rank] = {k: v for k, v in event.items() if k != "step"}
        session.events.emit("rank_memory", rank=rank, **event)
        return
    if kind == "step":
        history.append(event)
    elif kind == "eval" and history and history[-1].get("step") == event.get("step"):
        history[-1]["eval_loss"] = event.get("eval_loss")
    session.events.emit(kind, **event)
