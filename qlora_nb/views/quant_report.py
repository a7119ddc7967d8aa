"""Plotly figures for a :class:`qlora_nb.memory.quant_report.QuantReport` (drawn here, not by the report, so the engine never imports a view).

Plain ``go.Figure`` objects (not FigureWidgets): the report is computed once and
does not update, so it needs no kernel connection and renders in nbconvert too.
"""

from __future__ import annotations

from typing import Any

COLORS = {"nf4": "#2563eb", "fp4": "#f59e0b", "int4": "#dc2626"}


def layer_figure(report) -> Any:
    """Relative MSE per weight (log scale), one trace per method, in checkpoint order."""
    import plotly.graph_objects as go

    names = [r["name"].replace("model.layers.", "L").replace(".weight", "") for r in report.rows]
    fig = go.Figure()
    for m in ("nf4", "fp4", "int4"):
        fig.add_trace(go.Scatter(x=names, y=[r[f"{m}_rel_mse"] for r in report.rows], mode="lines+markers",
                                 name=m.upper(), line={"color": COLORS[m]}, marker={"size": 4}))
    fig.update_layout(title=f"Reconstruction error per weight — {report.model}", yaxis_type="log",
                      yaxis_title="relative MSE ‖w−ŵ‖²/‖w‖²", xaxis_title="weight", height=360,
                      margin={"l": 60, "r": 20, "t": 50, "b": 80}, legend={"orientation": "h"})
    return fig


def totals_figure(report) -> Any:
    """Total relative MSE per method and perplexity 4-bit vs 16-bit, side by side."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("total relative MSE (lower is better)",
                                                        "held-out perplexity"))
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
    fig.update_layout(height=340, margin={"l": 60, "r": 20, "t": 60, "b": 40},
                      title=f"NF4 vs FP4 vs Int4 (blocks of 64) on {report.model}'s own weights")
    return fig


def report_figures(report) -> dict[str, Any]:
    return {"layers": layer_figure(report), "totals": totals_figure(report)}
