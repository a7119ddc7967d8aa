"""Plotly figures for a :class:`qlora_nb.memory.quant_report.QuantReport` (drawn here, not by the report, so the engine never imports a view).

Plain ``go.Figure`` objects (not FigureWidgets): the report is computed once and
does not update, so it needs no kernel connection and renders in nbconvert too.
The layout is theme-neutral (transparent backgrounds, mid-grey text and grid),
so the figures read in JupyterLab's light and dark themes alike.
"""

from __future__ import annotations

import re
from typing import Any

COLORS = {"nf4": "#2563eb", "fp4": "#f59e0b", "int4": "#dc2626"}
# one colour per matrix type (q/k/v/o, gate/up/down and fused variants), readable on light and dark
TYPE_COLORS = ["#3b82f6", "#22c55e", "#f97316", "#a855f7", "#ef4444", "#14b8a6", "#eab308", "#ec4899", "#64748b"]
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:.*\.)?([^.]+)\.weight$")


def theme_neutral(fig: Any) -> Any:
    """Transparent backgrounds and grey text/grid: legible whichever notebook theme is on."""
    grey, grid = "rgb(136,136,136)", "rgba(136,136,136,0.25)"
    fig.update_layout(paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)", font={"color": grey})
    fig.update_xaxes(gridcolor=grid, zerolinecolor=grid, linecolor=grid)
    fig.update_yaxes(gridcolor=grid, zerolinecolor=grid, linecolor=grid)
    return fig


def by_layer(rows: list[dict]) -> tuple[dict[str, list[tuple[int, dict]]], list[str]]:
    """Rows grouped by matrix type as (layer index, row); names outside ``layers.N`` are returned apart."""
    groups: dict[str, list[tuple[int, dict]]] = {}
    other: list[str] = []
    for r in rows:
        m = _LAYER.search(r["name"])
        if m is None:
            other.append(r["name"])
            continue
        groups.setdefault(m.group(2), []).append((int(m.group(1)), r))
    return groups, other


def layer_figure(report) -> Any:
    """Relative NF4 error by layer index, one trace per matrix type; FP4 and Int4 as per-layer means (dashed)."""
    import plotly.graph_objects as go

    groups, other = by_layer(report.rows)
    fig = go.Figure()
    for i, (mtype, pts) in enumerate(groups.items()):
        fig.add_trace(go.Scatter(x=[x for x, _ in pts], y=[r["nf4_rel_mse"] for _, r in pts], mode="lines+markers",
                                 name=f"NF4 {mtype}", line={"color": TYPE_COLORS[i % len(TYPE_COLORS)]},
                                 marker={"size": 5}))
    layers = sorted({x for pts in groups.values() for x, _ in pts})
    for m in ("fp4", "int4"):
        mean = [sum(r[f"{m}_rel_mse"] for pts in groups.values() for x, r in pts if x == layer)
                / max(1, sum(1 for pts in groups.values() for x, _ in pts if x == layer)) for layer in layers]
        fig.add_trace(go.Scatter(x=layers, y=mean, mode="lines", name=f"{m.upper()} (mean of types)",
                                 line={"color": COLORS[m], "dash": "dash"}))
    note = f" · not plotted: {len(other)} weights outside the layers" if other else ""
    fig.update_layout(title=f"Reconstruction error by layer — {report.model} (lower is better){note}",
                      yaxis_type="log", yaxis_title="relative MSE ‖w−ŵ‖²/‖w‖²", xaxis_title="layer index",
                      height=380, margin={"l": 60, "r": 20, "t": 50, "b": 50}, legend={"orientation": "h", "y": -0.2})
    fig.update_xaxes(dtick=1 if len(layers) <= 32 else None)
    return theme_neutral(fig)


def perplexity_change(perplexity: dict[str, float]) -> str:
    """'4-bit nf4: +1.23% vs 16-bit' for each non-16-bit entry ('' without a 16-bit reference)."""
    ref = perplexity.get("16-bit")
    if not ref:
        return ""
    return "; ".join(f"{k}: {100 * (v / ref - 1):+.2f}% vs 16-bit" for k, v in perplexity.items() if k != "16-bit")


def totals_figure(report) -> Any:
    """Total relative MSE per method and perplexity 4-bit vs 16-bit, side by side (both: lower is better)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    change = perplexity_change(report.perplexity or {})
    fig = make_subplots(rows=1, cols=2, subplot_titles=("total relative MSE (lower is better)",
                                                        "held-out perplexity (lower is better)"
                                                        + (f"<br>{change}" if change else "")))
    methods = ["nf4", "fp4", "int4"]
    fig.add_trace(go.Bar(x=[m.upper() for m in methods], y=[report.totals[m]["rel_mse"] for m in methods],
                         marker_color=[COLORS[m] for m in methods], showlegend=False,
                         text=[f"{report.totals[m]['rel_mse']:.4f}" for m in methods], textposition="outside"),
                  row=1, col=1)
    if report.perplexity:
        keys = list(report.perplexity)
        fig.add_trace(go.Bar(x=keys, y=[report.perplexity[k] for k in keys], showlegend=False,
                             marker_color=["#64748b" if k == "16-bit" else "#2563eb" for k in keys],
                             text=[f"{report.perplexity[k]:.2f}" for k in keys], textposition="outside"),
                      row=1, col=2)
    fig.update_layout(height=360, margin={"l": 60, "r": 20, "t": 80, "b": 40},
                      title=f"NF4 vs FP4 vs Int4 (blocks of 64) on {report.model}'s own weights")
    return theme_neutral(fig)


def report_figures(report) -> dict[str, Any]:
    return {"layers": layer_figure(report), "totals": totals_figure(report)}
