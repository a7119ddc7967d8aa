"""The loss curve as a static SVG: the dashboard's saved fallback (a notebook reopened without its kernel).

The live chart is drawn by ``widgets/dashboard.js`` from the same synced ``curve`` data and the same
geometry (x from 0 to ``max_steps``, lr axis from 0). Colours are JupyterLab CSS variables with
light-theme defaults, so the inline SVG follows the theme too.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

W, H = 900, 230
PAD_L, PAD_R, PAD_T, PAD_B = 52, 64, 16, 26
LOSS = "var(--jp-brand-color1, #2563eb)"
EVAL = "var(--jp-error-color1, #dc2626)"
LR = "var(--jp-ui-font-color3, #94a3b8)"
AXIS = "var(--jp-ui-font-color2, #666)"
GRID = "var(--jp-border-color2, #ddd)"


def _thin(xs: Sequence[float], ys: Sequence[float], keep: int = 400) -> list[tuple[float, float]]:
    """At most ``keep`` points (every k-th, always the last): a saved notebook stays small."""
    pts = list(zip(xs, ys, strict=False))
    if len(pts) <= keep:
        return pts
    k = -(-len(pts) // keep)
    return pts[::k] + ([pts[-1]] if (len(pts) - 1) % k else [])


def loss_svg(curve: dict, max_steps: int | None = None) -> str:
    """An inline SVG of train loss, eval loss and learning rate (right axis); empty string without data."""
    steps, loss = curve.get("steps") or [], curve.get("loss") or []
    ev_s, ev_l, lrs = curve.get("eval_steps") or [], curve.get("eval_loss") or [], curve.get("lr") or []
    if not steps and not ev_s:
        return ""
    x_max = max([max_steps or 0, *steps, *ev_s, 1])
    ys = list(loss) + list(ev_l)
    y_lo, y_hi = min(ys), max(ys)
    if y_hi - y_lo < 1e-9:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    lr_hi = max(lrs, default=0.0) or 1.0
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def px(x: float) -> float:
        return PAD_L + pw * x / x_max

    def py(y: float) -> float:
        return PAD_T + ph * (1 - (y - y_lo) / (y_hi - y_lo))

    def plr(v: float) -> float:
        return PAD_T + ph * (1 - v / lr_hi)

    def line(pts, color, dash="") -> str:
        d = " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        return f'<polyline fill="none" stroke="{color}" stroke-width="1.5"{extra} points="{d}"/>'

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="100%" style="max-width:{W}px"'
           f' role="img" data-testid="loss-chart-static" data-points="{len(steps)}">',
           f"<title>loss curve: {len(steps)} train points, {len(ev_s)} eval points</title>"]
    for frac in (0, 0.5, 1):
        y = PAD_T + ph * frac
        val = y_hi - (y_hi - y_lo) * frac
        out.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>'
                   f'<text x="{PAD_L - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10" fill="{AXIS}">{val:.3g}</text>')
    out.append(f'<text x="{W - PAD_R + 4}" y="{PAD_T + 4}" font-size="10" fill="{AXIS}">{lr_hi:.1e}</text>'
               f'<text x="{W - PAD_R + 4}" y="{PAD_T + ph + 4:.1f}" font-size="10" fill="{AXIS}">lr 0</text>')
    for x, anchor in ((0, "start"), (x_max, "end")):
        out.append(f'<text x="{px(x):.1f}" y="{H - 8}" text-anchor="{anchor}" font-size="10" fill="{AXIS}">{x}</text>')
    out.append(f'<text x="{W - PAD_R + 8}" y="{H - 8}" font-size="10" fill="{AXIS}">step</text>')
    if lrs:
        out.append(line([(px(a), plr(b)) for a, b in _thin(steps, lrs)], LR, "3 3"))
    train = [(px(a), py(b)) for a, b in _thin(steps, loss)]
    if train:
        out.append(line(train, LOSS))
        out.extend(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2" fill="{LOSS}"/>' for a, b in train[-60:])
    evals = [(px(a), py(b)) for a, b in _thin(ev_s, ev_l)]
    if evals:
        out.append(line(evals, EVAL))
        out.extend(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{EVAL}"/>' for a, b in evals)
    legend = [("train loss", LOSS), ("eval loss", EVAL), ("learning rate", LR)]
    x = PAD_L
    for name, color in legend:
        out.append(f'<rect x="{x}" y="2" width="12" height="3" fill="{color}"/>'
                   f'<text x="{x + 16}" y="8" font-size="10" fill="{AXIS}">{html.escape(name)}</text>')
        x += 100
    out.append("</svg>")
    return "".join(out)
