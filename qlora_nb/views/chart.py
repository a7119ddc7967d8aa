"""The loss curve as a static SVG: the dashboard's saved fallback (a notebook reopened without its kernel).

The live chart is drawn by ``widgets/chart.js`` from the same synced ``curve`` data. Both draw the
same geometry, element for element (x from 0 to ``max_steps``, lr axis from 0, at most
:data:`KEEP` points per line, the last :data:`MARKERS` train points marked, three step labels);
``tests/test_widget_js.py`` renders both from the same curves and compares every coordinate and
label, so a change to one that is not made to the other fails there. (Computing the geometry once
in Python and syncing it would send pixel arrays at every step instead of the curve; the test
keeps the two in step at no cost to the live view.) Colours are JupyterLab CSS variables with
light-theme defaults, so the inline SVG follows the theme too.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

W, H = 900, 230
PAD_L, PAD_R, PAD_T, PAD_B = 52, 64, 16, 26
LOSS = "var(--jp-brand-color1, #2563eb)"
EVAL = "var(--jp-error-color1, #dc2626)"
LR = "var(--jp-ui-font-color3, #94a3b8)"
AXIS = "var(--jp-ui-font-color2, #666)"
GRID = "var(--jp-border-color2, #ddd)"
KEEP = 600  # points per line at most (a 100k-step run stays cheap to draw and a saved notebook small)
MARKERS = 80  # the last train points get a marker (a single point is visible)


def _thin(xs: Sequence[float], ys: Sequence[float], keep: int = KEEP) -> list[tuple[float, float]]:
    """At most ``keep`` points (every k-th, always the last)."""
    pts = list(zip(xs, ys, strict=False))
    if len(pts) <= keep:
        return pts
    k = -(-len(pts) // keep)
    return pts[::k] + ([pts[-1]] if (len(pts) - 1) % k else [])


def _precision3(v: float) -> str:
    """JavaScript's ``Number(v).toPrecision(3)``, which the live chart's axis labels use."""
    if v == 0 or not math.isfinite(v):
        return "0.00" if v == 0 else str(v)
    e = math.floor(math.log10(abs(v)))
    if f"{abs(v):.2e}".startswith("10.0"):  # rounding carried into the next power of ten
        e += 1
    if e < -6 or e >= 3:
        mant, exp = f"{v:.2e}".split("e")
        return f"{mant}e{'+' if int(exp) >= 0 else '-'}{abs(int(exp))}"
    return f"{v:.{max(0, 2 - e)}f}"


def _exponential1(v: float) -> str:
    """JavaScript's ``v.toExponential(1)`` (``2.0e-4``, not Python's ``2.0e-04``)."""
    mant, exp = f"{v:.1e}".split("e")
    return f"{mant}e{'+' if int(exp) >= 0 else '-'}{abs(int(exp))}"


def loss_svg(curve: dict, max_steps: int | None = None) -> str:
    """An inline SVG of train loss, eval loss and learning rate (right axis); empty string without data."""
    steps, loss = curve.get("steps") or [], curve.get("loss") or []
    ev_s, ev_l, lrs = curve.get("eval_steps") or [], curve.get("eval_loss") or [], curve.get("lr") or []
    if not steps and not ev_s:
        return ""
    x_max = max([max_steps or 0, *steps, *ev_s, 1])
    ys = list(loss) + list(ev_l)
    y_lo, y_hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    if y_hi - y_lo < 1e-9:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    lr_hi = max([0.0, *lrs]) or 1.0
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def px(x: float) -> float:
        return PAD_L + pw * x / x_max

    def py(y: float) -> float:
        return PAD_T + ph * (1 - (y - y_lo) / (y_hi - y_lo))

    def plr(v: float) -> float:
        return PAD_T + ph * (1 - max(0.0, v) / lr_hi)

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
        out.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        if ys:
            out.append(f'<text x="{PAD_L - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10" fill="{AXIS}">'
                       f'{_precision3(val)}</text>')
    lr_label = f"lr {_exponential1(lr_hi)}" if lrs else "lr"
    out.append(f'<text x="{W - PAD_R + 4}" y="{PAD_T + 4}" font-size="10" fill="{AXIS}">{lr_label}</text>'
               f'<text x="{W - PAD_R + 4}" y="{PAD_T + ph + 4:.1f}" font-size="10" fill="{AXIS}">0</text>')
    for x in (0, math.floor(x_max / 2 + 0.5), x_max):  # Math.round
        anchor = "start" if x == 0 else "end" if x == x_max else "middle"
        out.append(f'<text x="{px(x):.1f}" y="{H - 10}" text-anchor="{anchor}" font-size="10" fill="{AXIS}">{x}</text>')
    out.append(f'<text x="{W - PAD_R + 8}" y="{H - 10}" font-size="10" fill="{AXIS}">step</text>')
    if lrs:
        out.append(line([(px(a), plr(b)) for a, b in _thin(steps, lrs)], LR, "3 3"))
    train = [(px(a), py(b)) for a, b in _thin(steps, loss)]
    if train:
        out.append(line(train, LOSS))
        out.extend(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.5" fill="{LOSS}"/>' for a, b in train[-MARKERS:])
    evals = [(px(a), py(b)) for a, b in _thin(ev_s, ev_l)]
    if evals:
        out.append(line(evals, EVAL))
        out.extend(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3.5" fill="{EVAL}"/>' for a, b in evals)
    legend = [("train loss", LOSS), ("eval loss", EVAL), ("learning rate", LR)]
    x = PAD_L
    for name, color in legend:
        out.append(f'<rect x="{x}" y="2" width="12" height="3" fill="{color}"/>'
                   f'<text x="{x + 16}" y="8" font-size="10" fill="{AXIS}">{html.escape(name)}</text>')
        x += 100
    out.append("</svg>")
    return "".join(out)
