"""The run-history widget: a table of runs; tick two or more to overlay their curves and compare their configs.

Everything shown comes from :class:`qlora_nb.engine.training.runs.Runs` (read from disk),
so the view holds no state of its own beyond the selection. From a row:

- **load adapter** loads the run's saved adapter into the session as a new
  named adapter (the playground shows it as a new column);
- **resume** gives the ``%%qlora_train`` cell that continues the run from its
  last checkpoint (training from a widget callback would block the kernel's
  message loop; a cell can be interrupted and shows its own dashboard).
"""

from __future__ import annotations

import re
from typing import Any

import traitlets

from ..errors import QloraError
from .base import QloraWidget, asset, esm, text_as_html
from .session_guard import needs_session


class RunsView(QloraWidget):
    """Shows ``runs``; ``session`` (optional) is where "load adapter" loads."""

    _esm = esm("runs.js")
    UNLOADED = ("runs view: there is no session to load the adapter into (it was unloaded with %qlora_unload, or "
                "none was given). Run %qlora_load first, then %qlora_runs again (or pass session=).")
    SESSION_FREE = ("select", "resume_cell")
    _css = asset("qlora.css")

    folder = traitlets.Unicode("").tag(sync=True)
    runs = traitlets.List().tag(sync=True)  # one summary per run (engine.runs.RunInfo.summary)
    curves = traitlets.Dict().tag(sync=True)  # run name -> steps/loss/eval_steps/eval_loss/metric_steps/metric
    selected = traitlets.List().tag(sync=True)  # run names ticked in the table
    comparison = traitlets.Dict().tag(sync=True)  # RunComparison.to_event() of the selection (two or more)
    can_load = traitlets.Bool(False).tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    cell = traitlets.Unicode("").tag(sync=True)  # the last "resume" cell, shown to copy

    def __init__(self, runs: Any, *, session: Any = None, session_name: str = "qlora", **kwargs: Any) -> None:
        event = runs.to_event()
        super().__init__(folder=event["folder"], runs=event["runs"], curves=event["curves"],
                         can_load=session is not None, **kwargs)
        self._runs = runs
        self.session = session
        self.session_name = session_name
        self.observe(self._on_selected, names="selected")
        self.on_msg(self._on_front_msg)

    # ------------------------------------------------------------------ actions
    def select(self, *names: str) -> None:
        self.selected = list(names)

    def _on_selected(self, change: dict[str, Any]) -> None:
        names = [n for n in change["new"] if isinstance(n, str)]
        if len(names) < 2:
            self.comparison = {}
            return
        try:
            self.comparison = self._runs.compare(*names).to_event()
        except QloraError as exc:
            self.message = str(exc)

    @needs_session
    def load_adapter(self, name: str) -> str:
        """Load run ``name``'s adapter into the session under an adapter name made from the run's name."""
        run = self._runs[name]
        if run.adapter_dir is None or not run.adapter_dir.is_dir():
            raise QloraError(f"run {name!r} has no saved adapter (status: {run.status}).", where="runs view",
                             hint="An interrupted run keeps its checkpoint: resume it to finish and save one.")
        adapter = _adapter_name(name, self.session.adapters)
        return self.session.load_adapter(str(run.adapter_dir), name=adapter)

    def resume_cell(self, name: str) -> str:
        """The ``%%qlora_train`` cell that continues run ``name`` from its newest checkpoint."""
        run = self._runs[name]
        if run.checkpoint is None:
            raise QloraError(f"run {name!r} has no checkpoint to resume.", where="runs view",
                             hint="Checkpoints are written every save_steps and when a run is interrupted.")
        data = run.train.get("data")
        lines = [f"%%qlora_train --session {self.session_name}",
                 f"data: {data if isinstance(data, str) and not data.startswith('<') else '$your_data  # the run used ' + str(run.data)}",
                 f"output_dir: {run.folder}", "resume: true"]
        lines += [f"{k}: {v}" for k, v in run.changed.items() if k in run.train and k != "eval_metric"]
        return "\n".join(lines)

    def _on_front_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        name = content.get("name")
        try:
            if content.get("event") == "load":
                self.message = f"loaded {name}'s adapter as {self.load_adapter(name)!r}"
            elif content.get("event") == "resume":
                self.cell = self.resume_cell(name)
                self.message = f"the cell below continues {name}; copy it into a new cell"
        except QloraError as exc:
            self.message = str(exc)

    # ------------------------------------------------------------------ text
    def text(self) -> str:
        out = self._runs.text()
        if len(self.selected) >= 2:
            out += "\n\n" + self._runs.compare(*self.selected).text()
        return out

    def fallback_title(self) -> str:
        return f"runs in {self.folder} (saved view; re-run the cell for the live table)"

    def fallback_body(self) -> str:
        return text_as_html(self.text())


def _adapter_name(run: str, taken: Any) -> str:
    """A peft adapter name from a run name (letters, digits, _), not clashing with the session's adapters."""
    base = re.sub(r"\W", "_", run).strip("_") or "run"
    if base[0].isdigit():
        base = "run_" + base
    name, i = base, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name
