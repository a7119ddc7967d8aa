"""The dashboard's state as plain text pieces: ranks' memory and the task metric (fallback and ``text()``)."""

from __future__ import annotations

from typing import Any

from ..units import human_bytes


def rank_rows(ranks: dict[int, dict[str, float]]) -> list[dict[str, Any]]:
    """Each launched rank's latest memory report, by rank (the synced form: a reloaded page redraws it)."""
    return [{"rank": r, **ranks[r]} for r in sorted(ranks)]


def rank_text(ranks: dict[int, dict[str, float]]) -> str:
    """'rank 0 RSS 1.2 GiB (GPU peak 3.0 GiB), rank 1 …' for the plain-text fallback."""
    def one(r: int, m: dict[str, float]) -> str:
        gpu = f" (GPU peak {human_bytes(m['gpu_peak'])})" if m.get("gpu_peak") is not None else ""
        return f"rank {r} RSS {human_bytes(m['rss'])}{gpu}" if m.get("rss") is not None else f"rank {r}{gpu}"
    return ", ".join(one(r, ranks[r]) for r in sorted(ranks))


def metric_text(p: dict[str, Any]) -> str:
    """``exact match 0/16 → 13/16 (scoring took 4.1 s)``: the base's score, then the adapter's latest."""
    scores = " → ".join(str(p[k]) for k in ("base_metric", "metric") if p.get(k))
    took = f" (scoring took {p['metric_s']:.1f} s)" if p.get("metric_s") else ""
    return f"{p.get('metric_name', 'task metric')} {scores}{took}"
