// The dashboard's loss chart as SVG, drawn from the synced `curve` arrays (so a reloaded page redraws it).
// Same geometry as qlora_nb/views/chart.py (the saved fallback), element for element: x from 0 to max_steps,
// lr axis from 0, KEEP points per line, the last MARKERS train points marked; tests/test_widget_js.py draws both
// from the same curves and compares every coordinate and label, so change both together.
// Colours come from qlora.css classes built on JupyterLab's --jp-* variables, so it follows the theme.
const NS = "http://www.w3.org/2000/svg";
const W = 900, H = 230, L = 52, R = 64, T = 16, B = 26;

function node(tag, attrs = {}, text) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
  if (text !== undefined) n.textContent = text;
  return n;
}

// At most `keep` points (every k-th and the last), so a 100k-step run stays cheap to draw.
const KEEP = 600, MARKERS = 80;
function thin(xs, ys, keep = KEEP) {
  const pts = xs.map((x, i) => [x, ys[i]]);
  if (pts.length <= keep) return pts;
  const k = Math.ceil(pts.length / keep);
  const out = pts.filter((_, i) => i % k === 0);
  if ((pts.length - 1) % k) out.push(pts[pts.length - 1]);
  return out;
}

export function lossChart(curve, maxSteps, log = false) {
  const steps = curve.steps || [], loss = curve.loss || [], lrs = curve.lr || [];
  const evS = curve.eval_steps || [], evL = curve.eval_loss || [];
  const svg = node("svg", { viewBox: `0 0 ${W} ${H}`, class: "qn-chart", "data-testid": "loss-chart",
    "data-points": steps.length, "data-eval-points": evS.length,
    "data-last-step": steps.length ? steps[steps.length - 1] : "", role: "img" });
  svg.append(node("title", {}, `loss curve: ${steps.length} train points, ${evS.length} eval points`));
  const xMax = Math.max(maxSteps || 0, ...steps, ...evS, 1);
  const ys = loss.concat(evL);
  // log scale (the dashboard's toggle): a loss falling by orders of magnitude stays readable; linear otherwise
  const useLog = log && ys.length > 0 && ys.every((v) => v > 0);
  const tf = useLog ? Math.log10 : (v) => v, back = useLog ? (v) => 10 ** v : (v) => v;
  if (useLog) svg.setAttribute("data-scale", "log");
  let lo = ys.length ? Math.min(...ys.map(tf)) : 0, hi = ys.length ? Math.max(...ys.map(tf)) : 1;
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const lrHi = Math.max(0, ...lrs) || 1;
  const pw = W - L - R, ph = H - T - B;
  const px = (x) => L + (pw * x) / xMax, py = (y) => T + ph * (1 - (tf(y) - lo) / (hi - lo));
  const plr = (v) => T + ph * (1 - Math.max(0, v) / lrHi);
  for (const f of [0, 0.5, 1]) {
    const y = T + ph * f;
    svg.append(node("line", { x1: L, x2: W - R, y1: y, y2: y, class: "qn-grid" }));
    if (ys.length) svg.append(node("text", { x: L - 4, y: y + 4, "text-anchor": "end", class: "qn-axis" },
      Number(back(hi - (hi - lo) * f)).toPrecision(3)));
  }
  svg.append(node("text", { x: W - R + 4, y: T + 4, class: "qn-axis" }, lrs.length ? `lr ${lrHi.toExponential(1)}` : "lr"));
  svg.append(node("text", { x: W - R + 4, y: T + ph + 4, class: "qn-axis" }, "0"));
  for (const x of [0, Math.round(xMax / 2), xMax]) {
    const anchor = x === 0 ? "start" : x === xMax ? "end" : "middle";
    svg.append(node("text", { x: px(x), y: H - 10, "text-anchor": anchor, class: "qn-axis" }, String(x)));
  }
  svg.append(node("text", { x: W - R + 8, y: H - 10, class: "qn-axis" }, "step"));
  const line = (pts, cls) => svg.append(node("polyline", { points: pts.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(" "), class: cls }));
  if (lrs.length) line(thin(steps, lrs).map(([a, b]) => [px(a), plr(b)]), "qn-line-lr");
  const train = thin(steps, loss);
  if (train.length) line(train.map(([a, b]) => [px(a), py(b)]), "qn-line-loss");
  // point markers (a single point is visible); hover shows the value
  for (const [a, b] of train.slice(-MARKERS)) {
    const c = node("circle", { cx: px(a), cy: py(b), r: 2.5, class: "qn-dot-loss" });
    c.append(node("title", {}, `step ${a}: loss ${Number(b).toFixed(4)}`));
    svg.append(c);
  }
  const ev = thin(evS, evL);
  if (ev.length) line(ev.map(([a, b]) => [px(a), py(b)]), "qn-line-eval");
  for (const [a, b] of ev) {
    const c = node("circle", { cx: px(a), cy: py(b), r: 3.5, class: "qn-dot-eval" });
    c.append(node("title", {}, `step ${a}: eval loss ${Number(b).toFixed(4)}`));
    svg.append(c);
  }
  let x = L;
  for (const [name, cls] of [["train loss", "qn-key-loss"], ["eval loss", "qn-key-eval"], ["learning rate", "qn-key-lr"]]) {
    svg.append(node("rect", { x, y: 2, width: 12, height: 3, class: cls }));
    svg.append(node("text", { x: x + 16, y: 8, class: "qn-axis" }, name));
    x += 100;
  }
  return svg;
}

// Several runs' curves on one chart (the runs widget): one colour per run, train loss solid, eval loss dashed
// (key "loss"), or the task metric as a fraction 0..1 with the base's score at step 0 (key "metric").
export const RUN_COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
export function overlayChart(curves, names, key = "loss", maxSteps = 0) {
  const series = [];
  names.forEach((name, i) => {
    const c = curves[name] || {}, color = RUN_COLORS[i % RUN_COLORS.length];
    if (key === "metric") series.push({ name, color, xs: c.metric_steps || [], ys: c.metric || [], dash: "" });
    else {
      series.push({ name, color, xs: c.steps || [], ys: c.loss || [], dash: "" });
      series.push({ name: `${name} eval`, color, xs: c.eval_steps || [], ys: c.eval_loss || [], dash: "5 3" });
    }
  });
  const all = series.flatMap((s) => s.ys), xsAll = series.flatMap((s) => s.xs);
  const h = 200;
  const svg = node("svg", { viewBox: `0 0 ${W} ${h}`, class: "qn-chart", "data-testid": `runs-chart-${key}`,
    "data-series": series.filter((s) => s.xs.length).length, role: "img" });
  svg.append(node("title", {}, `${key === "metric" ? "task metric" : "loss"} of ${names.join(", ")}`));
  const xMax = Math.max(1, maxSteps || 0, ...xsAll);
  let lo = key === "metric" ? 0 : all.length ? Math.min(...all) : 0, hi = key === "metric" ? 1 : all.length ? Math.max(...all) : 1;
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const pw = W - L - R, ph = h - T - B;
  const px = (x) => L + (pw * x) / xMax, py = (y) => T + ph * (1 - (y - lo) / (hi - lo));
  for (const f of [0, 0.5, 1]) {
    const y = T + ph * f;
    svg.append(node("line", { x1: L, x2: W - R, y1: y, y2: y, class: "qn-grid" }));
    const v = hi - (hi - lo) * f;
    svg.append(node("text", { x: L - 4, y: y + 4, "text-anchor": "end", class: "qn-axis" },
      key === "metric" ? `${Math.round(100 * v)}%` : Number(v).toPrecision(3)));
  }
  for (const x of [0, xMax]) svg.append(node("text", { x: px(x), y: h - 10, "text-anchor": x ? "end" : "start", class: "qn-axis" }, String(x)));
  svg.append(node("text", { x: W - R + 8, y: h - 10, class: "qn-axis" }, "step"));
  for (const s of series) {
    if (!s.xs.length) continue;
    const pts = thin(s.xs, s.ys);
    svg.append(node("polyline", { points: pts.map(([a, b]) => `${px(a).toFixed(1)},${py(b).toFixed(1)}`).join(" "),
      stroke: s.color, "stroke-dasharray": s.dash, "data-run": s.name }));
    if (s.dash || key === "metric") for (const [a, b] of pts) {
      const c = node("circle", { cx: px(a), cy: py(b), r: 3, fill: s.color });
      c.append(node("title", {}, `${s.name} step ${a}: ${key === "metric" ? `${(100 * b).toFixed(0)}%` : Number(b).toFixed(4)}`));
      svg.append(c);
    }
  }
  let x = L;
  names.forEach((name, i) => {
    svg.append(node("rect", { x, y: 2, width: 12, height: 3, fill: RUN_COLORS[i % RUN_COLORS.length] }));
    svg.append(node("text", { x: x + 16, y: 8, class: "qn-axis" }, name));
    x += Math.max(80, 16 + 7 * name.length);
  });
  if (key === "loss") svg.append(node("text", { x: W - R, y: 8, "text-anchor": "end", class: "qn-axis" }, "solid: train · dashed: eval"));
  return svg;
}

// The dashboard's task-metric chart: the base's score at step 0, then the adapter's at each eval.
export function metricChart(curve, maxSteps, name) {
  const svg = overlayChart({ [name]: curve }, [name], "metric", maxSteps);
  const xs = curve.metric_steps || [];
  svg.setAttribute("data-testid", "metric-chart");
  svg.setAttribute("data-points", String(xs.length));
  if (maxSteps) svg.setAttribute("data-max-steps", String(maxSteps));
  return svg;
}
