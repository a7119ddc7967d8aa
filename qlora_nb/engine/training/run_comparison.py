"""Runs side by side (``runs.compare("a", "b")``), and the cell formatting the run listing shares.

Split from :mod:`.runs` (reading runs from disk) for size: this module only lines up what was read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runs import RunInfo

# Train/load fields that say where a run read and wrote, not how it trained: left out of "changed" and compare.
NOT_OPTIONS = {"data", "output_dir", "run_name", "overwrite", "resume", "model", "device", "compute_dtype"}


def _plain(v: Any) -> Any:
    return v if isinstance(v, (str, int, float, bool, type(None), list)) else str(v)


class RunComparison:
    """Runs side by side: one row per option or result, ``differs`` where the runs disagree."""

    RESULTS = ("model", "data", "data_sha256", "status", "steps", "train_loss", "eval_loss", "metric",
               "tokens_per_s", "peak_memory", "duration_s", "adapter_dir", "checkpoint")

    def __init__(self, runs: list[RunInfo]) -> None:
        self.runs = runs
        self.names = [r.name for r in runs]
        summaries = [r.summary() for r in runs]
        keys = sorted({k for r in runs for k in {**r.load, **r.train}} - NOT_OPTIONS)
        self.rows: list[dict[str, Any]] = []
        for k in keys:
            values = [_plain({**r.load, **r.train}.get(k)) for r in runs]
            self.rows.append({"key": k, "kind": "option", "values": values, "differs": len(set(map(str, values))) > 1})
        for k in self.RESULTS:
            values = [s[k] for s in summaries]
            self.rows.append({"key": k, "kind": "result", "values": values, "differs": len(set(map(str, values))) > 1})

    @property
    def differences(self) -> dict[str, list[Any]]:
        """Options that differ between the runs: name -> one value per run."""
        return {r["key"]: r["values"] for r in self.rows if r["differs"] and r["kind"] == "option"}

    def curves(self) -> dict[str, dict[str, list]]:
        return {r.name: r.curve() for r in self.runs}

    def to_pandas(self):
        import pandas as pd

        df = pd.DataFrame([r["values"] for r in self.rows], columns=self.names,
                          index=[r["key"] for r in self.rows])
        df["differs"] = [r["differs"] for r in self.rows]
        return df

    def to_event(self) -> dict[str, Any]:
        return {"names": self.names, "rows": self.rows, "curves": self.curves()}

    def text(self, only_differences: bool = False) -> str:
        rows = [r for r in self.rows if r["differs"] or not only_differences]
        table = [["", *self.names]] + [[("* " if r["differs"] else "  ") + r["key"],
                                        *(_cell(v) for v in r["values"])] for r in rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        lines = [f"{' vs '.join(self.names)} (* differs)"]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        return self.text()

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(self.text())


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return _short(v, 40) if v is not None else "–"


def _short(v: Any, n: int) -> str:
    s = "–" if v is None else str(v)
    return s if len(s) <= n else "…" + s[-(n - 1):]


def _num(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) else "–"


def _dur(s: Any) -> str:
    if not isinstance(s, (int, float)):
        return "–"
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.1f}min"
