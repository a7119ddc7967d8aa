"""The run history: every run the toolkit wrote under a folder, read back from disk.

Nothing is kept in a second format: a run folder already holds what a listing
needs. The toolkit's marker (``written_by_qlora_nb.json``: start time, data
source and fingerprint), ``train_config.json`` (options, model, final metrics,
written when the run ends) and the Trainer's own ``trainer_state.json``
(``log_history``: every logged step and eval), at the run's top or, for a run
that never finished, in its newest complete checkpoint. No index file: reading
three small JSON files per run lists a hundred runs in milliseconds, and an
index could go stale when a folder is deleted or copied by hand.

Reading never raises for one damaged run: a folder deleted while listing is
left out, a half-written one is listed as ``incomplete`` with what could be
read and a note saying what could not. No torch import: a fresh kernel lists
yesterday's runs at once.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...config import LoadConfig, TrainConfig
from ...errors import QloraError, did_you_mean
from ...options import field_default
from ...overwrite import MARKER
from ...units import human_bytes
from .run_comparison import NOT_OPTIONS, RunComparison, _dur, _num, _plain, _short
from .run_files import (
    checkpoints,
    clean_history,
    describe,
    int_or_none,
    mtime,
    number_or_none,
    read_json,
    section,
    text_or_none,
)

# Options that name the run rather than configure it (shown elsewhere in the listing), or resolve "auto" per machine.


@dataclass
class RunInfo:
    """One run folder as read from disk (see the module doc for where each field comes from)."""

    name: str
    folder: Path
    status: str  # done, stopped (interrupted / early stop) or incomplete (no final train_config.json)
    started: float | None = None  # epoch seconds
    model: str | None = None
    data: str | None = None
    data_sha256: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    load: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)
    adapter_dir: Path | None = None
    checkpoint: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def date(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.started)) if self.started else "?"

    @property
    def changed(self) -> dict[str, Any]:
        """The options that differ from the defaults (train and load), by name."""
        return {**_changed(LoadConfig, self.load), **_changed(TrainConfig, self.train)}

    @property
    def steps(self) -> int | None:
        s = self.metrics.get("steps")
        if isinstance(s, int):
            return s
        return max((int(h["step"]) for h in self.history if isinstance(h.get("step"), int)), default=None)

    def _last(self, key: str) -> Any:
        return next((h[key] for h in reversed(self.history) if key in h), None)

    @property
    def train_loss(self) -> float | None:
        return self._last("loss")

    @property
    def eval_loss(self) -> float | None:
        v = self.metrics.get("eval_loss")
        return v if isinstance(v, (int, float)) else self._last("eval_loss")

    @property
    def metric(self) -> str:
        """``exact match 0/16 → 13/16`` when the run had an eval_metric, else ''."""
        if self.metrics.get("eval_metric_summary"):
            return str(self.metrics["eval_metric_summary"])
        last = self._last("eval_metric")
        return f"metric {last:.2f}" if isinstance(last, (int, float)) else ""

    def curve(self) -> dict[str, list]:
        """Train loss, eval loss and task metric by step (the dashboard's ``curve`` layout)."""
        out: dict[str, list] = {k: [] for k in ("steps", "loss", "lr", "eval_steps", "eval_loss",
                                                "metric_steps", "metric")}
        for h in self.history:
            if "loss" in h:
                out["steps"].append(h["step"])
                out["loss"].append(h["loss"])
                out["lr"].append(h.get("learning_rate") or 0.0)
            if "eval_loss" in h:
                out["eval_steps"].append(h["step"])
                out["eval_loss"].append(h["eval_loss"])
            if "eval_metric" in h:
                out["metric_steps"].append(h["step"])
                out["metric"].append(h["eval_metric"])
        base = self.metrics.get("base_eval_metric")
        if isinstance(base, (int, float)):
            out["metric_steps"].insert(0, 0)
            out["metric"].insert(0, base)
        return out

    def summary(self) -> dict[str, Any]:
        """One row of the listing, JSON-safe (what the widget and ``Runs.to_pandas`` show)."""
        m = self.metrics
        return {"name": self.name, "date": self.date, "status": self.status, "model": self.model,
                "data": self.data, "data_sha256": (self.data_sha256 or "")[:12] or None,
                "changed": {k: _plain(v) for k, v in self.changed.items()}, "steps": self.steps,
                "max_steps": int_or_none(m.get("max_steps")) or int_or_none(self.train.get("max_steps")),
                "train_loss": self.train_loss, "eval_loss": self.eval_loss, "metric": self.metric,
                "tokens_per_s": number_or_none(m.get("tokens_per_s")), "peak_memory": number_or_none(m.get("peak_rss")),
                "duration_s": number_or_none(m.get("wall_s")),
                "adapter_dir": str(self.adapter_dir) if self.adapter_dir else None,
                "checkpoint": str(self.checkpoint) if self.checkpoint else None, "notes": list(self.notes)}


def _changed(cls: type, saved: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in NOT_OPTIONS or f.name not in saved:
            continue
        value, default = saved[f.name], field_default(f)
        if isinstance(default, (int, float)) and isinstance(value, (int, float)) and not isinstance(value, bool):
            if float(value) == float(default):
                continue
        elif value == default:
            continue
        out[f.name] = value
    return out


def read_run(folder: str | Path) -> RunInfo | None:
    """The run in ``folder``, or None when it is not a run folder (or vanished while being read)."""
    folder = Path(folder)
    notes: list[str] = []
    marker = read_json(folder / MARKER, notes)
    n_notes = len(notes)
    config = read_json(folder / "train_config.json", notes)
    parsed = len(notes) == n_notes and (folder / "train_config.json").is_file()  # present, and valid JSON
    if parsed and not (isinstance(config, dict) and isinstance(config.get("train"), dict)):
        notes.append(f"train_config.json is unreadable: {describe(config)}, not the toolkit's object with a "
                     "'train' section of options")
        config = None
    is_run = (isinstance(marker, dict) and marker.get("kind") == "run") or config is not None
    if not is_run or not folder.is_dir():
        return None
    ckpts = checkpoints(folder)
    state = read_json(folder / "trainer_state.json", notes)
    ckpt_state = None
    complete = None
    for c in ckpts:  # the newest checkpoint whose state parses (a torn one is skipped, as resume skips it)
        ckpt_state = read_json(c / "trainer_state.json", [])
        if isinstance(ckpt_state, dict):
            complete = c
            break
    if not isinstance(state, dict):
        state = ckpt_state if isinstance(ckpt_state, dict) else {}
    history = clean_history(state.get("log_history"), notes)
    marker = marker if isinstance(marker, dict) else {}
    metrics = section(config, "metrics", notes)
    train = section(config, "train", notes)
    load = section(config, "load", notes)
    if config is None and parsed:
        status = "unreadable"  # valid JSON of the wrong type, noted above: not "still training"
    elif config is None and (folder / "train_config.json").is_file():
        status = "incomplete"  # torn mid-write (an interrupted save): noted above as could not be read
    elif config is None:
        status = "incomplete"
        notes.append("no final train_config.json: the run is still training, or it ended before saving")
    elif (isinstance(metrics.get("steps"), int) and isinstance(metrics.get("max_steps"), int)
          and metrics["steps"] < metrics["max_steps"]):
        status = "stopped"
    else:
        status = "done"
    adapter = folder / "adapter"
    started = mtime(folder / MARKER) or mtime(folder)
    data = marker.get("data") or (train.get("data") if isinstance(train.get("data"), str) else None)
    model = load.get("model") or (config or {}).get("base_model")
    return RunInfo(name=folder.name, folder=folder, status=status, started=started,
                   model=model if isinstance(model, str) else None,
                   data=data, data_sha256=text_or_none(marker.get("data_sha256")), train=train,
                   load=load, metrics=metrics, history=history,
                   adapter_dir=adapter if (adapter / "adapter_config.json").is_file() else None,
                   checkpoint=complete, notes=notes)


def list_runs(folder: str | Path = "runs") -> Runs:
    """Every run under ``folder`` (one level down), oldest first."""
    if not isinstance(folder, (str, Path)) or not str(folder).strip():
        raise QloraError(f"the runs folder must be a path, got {folder!r}.", where="runs folder",
                         hint='Pass the folder runs are written to, e.g. qlora_nb.runs("runs").')
    root = Path(folder).expanduser()
    if not root.exists():
        raise QloraError(f"the runs folder {str(root)!r} does not exist.", where="runs folder",
                         hint="Runs are written to runs/<run_name> next to the notebook unless output_dir says "
                              "otherwise; pass that folder, or train a run first.")
    if not root.is_dir():
        raise QloraError(f"{str(root)!r} is a file, not a folder of runs.", where="runs folder",
                         hint="Pass the folder that holds the run folders (e.g. runs).")
    runs = []
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError as exc:
        raise QloraError(f"the runs folder {str(root)!r} cannot be read ({exc.strerror or exc}).",
                         where="runs folder", hint="Check its permissions.") from None
    if read_run(root) is not None:  # the folder given is itself one run
        children = [root]
    for child in children:
        info = read_run(child)
        if info is not None:
            runs.append(info)
    if not runs:
        raise QloraError(f"the folder {str(root)!r} holds no runs (no sub-folder has a {MARKER} of a run or a "
                         "train_config.json).", where="runs folder",
                         hint="Train a run (its output_dir defaults to runs/<run_name>), or pass the folder your "
                              "output_dir pointed into.")
    runs.sort(key=lambda r: (r.started or 0, r.name))
    return Runs(runs, root)


class Runs(list):
    """The runs of one folder (a list of :class:`RunInfo`); ``runs["name"]`` picks one, ``compare`` lines them up."""

    def __init__(self, runs: list[RunInfo], folder: Path) -> None:
        super().__init__(runs)
        self.folder = folder

    @property
    def names(self) -> list[str]:
        return [r.name for r in self]

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            for r in self:
                if r.name == key:
                    return r
            raise QloraError(f"no run named {key!r} in {str(self.folder)!r}.", where="run name",
                             hint=did_you_mean(key, self.names))
        return super().__getitem__(key)

    def compare(self, *names: str) -> RunComparison:
        """Two or more runs side by side: their options, results and curves, differences marked."""
        if len(names) == 1 and isinstance(names[0], (list, tuple)):
            names = tuple(names[0])
        if len(names) < 2:
            raise QloraError(f"compare needs two or more run names, got {len(names)}.", where="runs.compare",
                             hint=f"e.g. runs.compare({', '.join(repr(n) for n in self.names[-2:])}).")
        for n in names:
            if not isinstance(n, str):
                raise QloraError(f"run names are text, got {type(n).__name__} {n!r}.", where="runs.compare")
        return RunComparison([self[n] for n in names])

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame([r.summary() for r in self])

    def to_event(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "runs": [r.summary() for r in self],
                "curves": {r.name: r.curve() for r in self}}

    def text(self) -> str:
        head = ("run", "date", "status", "model", "data", "steps", "loss", "eval", "metric", "tok/s", "peak", "time")
        rows = [head]
        for r in self:
            s = r.summary()
            rows.append((r.name, s["date"], s["status"], _short(s["model"], 24),
                         f"{_short(s['data'], 16)} {s['data_sha256'] or ''}".strip(),
                         "?" if s["steps"] is None else f"{s['steps']}/{s['max_steps'] or '?'}",
                         _num(s["train_loss"]), _num(s["eval_loss"]), s["metric"] or "–",
                         f"{s['tokens_per_s']:.0f}" if s["tokens_per_s"] else "–",
                         human_bytes(s["peak_memory"]) if s["peak_memory"] else "–", _dur(s["duration_s"])))
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
        lines = [f"{len(self)} run(s) in {self.folder}"]
        lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        for r in self:
            opts = ", ".join(f"{k}={_plain(v)}" for k, v in r.changed.items()) or "defaults"
            where = [f"adapter {r.adapter_dir}"] if r.adapter_dir else ["no adapter"]
            if r.checkpoint:
                where.append(f"checkpoint {r.checkpoint}")
            lines.append(f"{r.name}: {opts}; {'; '.join(where)}" + "".join(f"; note: {n}" for n in r.notes))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        return self.text()

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(self.text())
