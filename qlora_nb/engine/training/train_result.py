"""What a training run produced: the result ``session.train`` returns and ``session.runs`` keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainResult:
    """What a run produced. ``history`` has one dict per logged step (``eval_loss`` at eval steps)."""

    history: list[dict[str, Any]]
    adapter_dir: Path | None
    metrics: dict[str, Any]
    interrupted: bool = False
    stopped_early: bool = False
    truncated_rows: int = 0
    output_dir: Path | None = None
    checkpoint: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)
    note: str = ""  # what an interrupt left behind and how to continue

    @property
    def losses(self) -> list[float]:
        return [h["loss"] for h in self.history if "loss" in h]

    @property
    def eval_losses(self) -> list[float]:
        return [h["eval_loss"] for h in self.history if "eval_loss" in h]

    @property
    def eval_metrics(self) -> list[float]:
        """The task metric (``eval_metric``, a fraction of the scored rows) at each eval."""
        return [h["eval_metric"] for h in self.history if "eval_metric" in h]

    def __repr__(self) -> str:
        state = "interrupted" if self.interrupted else "stopped early" if self.stopped_early else "done"
        last = f", loss {self.losses[-1]:.4f}" if self.losses else ""
        ev = f", eval_loss {self.eval_losses[-1]:.4f}" if self.eval_losses else ""
        if self.metrics.get("eval_metric_summary"):
            ev += f", {self.metrics['eval_metric_summary']}"
        return (f"<TrainResult {state}: {self.metrics.get('steps', 0)} steps{last}{ev}, "
                f"{self.metrics.get('tokens_per_s', 0):.0f} tokens/s, adapter in {self.adapter_dir}>")
