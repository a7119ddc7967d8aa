"""The widgets' pure JavaScript helpers, run in node (skipped where node is missing): the compare widget's
word diff and shared-template fold, the dashboard's Stop state, and the chart's axes."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from qlora_nb.views.base import esm

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")


def run_js(tmp_path, module: str, body: str):
    (tmp_path / "m.mjs").write_text(esm(module), encoding="utf-8")
    script = ("globalThis.document = { createElementNS: (ns, tag) => ({ tag, attrs: {}, kids: [],"
              " setAttribute(k, v) { this.attrs[k] = v; }, append(...k) { this.kids.push(...k); },"
              " set textContent(t) { this.text = t; } }) };\n"
              f"const m = await import('./m.mjs');\nconsole.log(JSON.stringify(await (async () => {{ {body} }})()));")
    out = subprocess.run(["node", "--input-type=module", "-e", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_word_diff_marks_words_not_whitespace(tmp_path):
    res = run_js(tmp_path, "compare.js", """return [
      m.wordDiff("the  cat sat\\n  on mat", "the cat sat on the mat"),
      m.wordDiff("a b c", "a x c"),
      m.wordDiff("    indented", "indented")];""")
    same, changed, indent = res
    assert all(not c for _, c in same)  # whitespace-only differences and a dropped word: nothing to paint
    assert [p for p, c in changed if c] == ["b"]
    assert indent == [["    ", False], ["indented", False]]


def test_shared_template_is_folded_once(tmp_path):
    res = run_js(tmp_path, "compare.js", """return [
      m.sharedTemplate(["### I:\\nDo X\\n\\n### Input:\\nA\\n\\n### Response:", "### I:\\nDo X\\n\\n### Input:\\nB\\n\\n### Response:"]),
      m.sharedTemplate(["same", "same"]), m.sharedTemplate(["only one"])];""")
    assert res[0] == {"head": ["### I:", "Do X", "", "### Input:"], "tail": ["", "### Response:"]}
    assert res[1] == res[2] == {"head": [], "tail": []}  # a row always keeps its own text


def test_stop_button_states(tmp_path):
    res = run_js(tmp_path, "dashboard.js", """return [
      m.stopState("running", false, true), m.stopState("running", false, false),
      m.stopState("running", true, true), m.stopState("done", false, true)];""")
    live, no_subshell, clicked, done = res
    assert live == {"hidden": False, "disabled": False, "hint": "stop at the next step and save a checkpoint"}
    assert "use Interrupt" in no_subshell["hint"] and not no_subshell["disabled"]
    assert clicked["disabled"] and not clicked["hidden"]
    assert done["hidden"] and done["disabled"]


def test_chart_x_axis_runs_to_max_steps_and_lr_from_zero(tmp_path):
    res = run_js(tmp_path, "dashboard.js", """
      const svg = m.lossChart({ steps: [1], loss: [2.0], lr: [0.0], eval_steps: [], eval_loss: [] }, 60);
      const texts = svg.kids.filter((k) => k.tag === "text").map((k) => k.text);
      const dots = svg.kids.filter((k) => k.tag === "circle").length;
      const fitted = m.lossChart({ steps: [1, 2, 3], loss: [3, 2, 1], lr: [1, 1, 1] }, null);  // a stopped run
      const fittedTexts = fitted.kids.filter((k) => k.tag === "text").map((k) => k.text);
      return { points: svg.attrs["data-points"], texts, dots, fittedTexts };""")
    assert res["points"] == "1" and res["dots"] == 1  # a single point is visible as a marker
    assert "60" in res["texts"] and "0" in res["texts"] and "step" in res["texts"]
    assert "3" in res["fittedTexts"] and "60" not in res["fittedTexts"]  # no max_steps: the axis fits the steps


def test_loss_chart_log_scale_toggle(tmp_path):
    """The dashboard's log toggle: a loss falling by orders of magnitude is spread evenly; off, the default
    (and the saved fallback's geometry) stays linear; a non-positive loss keeps the linear scale."""
    res = run_js(tmp_path, "dashboard.js", """
      const c = { steps: [1, 2, 3], loss: [1, 0.1, 0.01], lr: [1, 1, 1], eval_steps: [], eval_loss: [] };
      const ys = (svg) => svg.kids.filter((k) => k.tag === "circle").map((k) => k.attrs.cy);
      const lin = m.lossChart(c, 3), log = m.lossChart(c, 3, true);
      const zero = m.lossChart({ ...c, loss: [1, 0, 0.5] }, 3, true);
      const labels = log.kids.filter((k) => k.tag === "text").map((k) => k.text);
      return { lin: ys(lin), log: ys(log), scale: log.attrs["data-scale"] || null,
               linScale: lin.attrs["data-scale"] || null, zeroScale: zero.attrs["data-scale"] || null, labels };""")
    a, b, c = map(float, res["log"])
    assert abs((b - a) - (c - b)) < 1e-6  # equal steps per decade
    la, lb, lc = map(float, res["lin"])
    assert (lb - la) > 5 * (lc - lb)  # linear: the last decade is squeezed
    assert res["scale"] == "log" and res["linScale"] is None and res["zeroScale"] is None
    assert "1.00" in res["labels"] and "0.0100" in res["labels"]


def _html_document() -> str:
    """A stand-in for the few DOM calls el() makes (createElement, append, setAttribute, className, style)."""
    return ("globalThis.document = { createElement: (tag) => ({ tag, attrs: {}, kids: [], style: {},"
            " classList: { add() {}, toggle() {} }, setAttribute(k, v) { this.attrs[k] = v; },"
            " append(...k) { this.kids.push(...k); } }) };\n"
            "const text = (n) => typeof n === 'string' ? n : (n.textContent ?? '') + n.kids.map(text).join('');\n"
            "const find = (n, id, out = []) => { if (typeof n !== 'string') { if (n.attrs['data-testid'] === id)"
            " out.push(n); n.kids.forEach((k) => find(k, id, out)); } return out; };\n")


def test_probe_table_shows_inputs_compare_column_names_and_cut_marks(tmp_path):
    tpl = "### Instruction:\\nAnswer briefly.\\n\\n### Input:\\n{x}\\n\\n### Response:\\n"
    res = run_js(tmp_path, "dashboard.js", _html_document() + f"""
      const p = (x) => `{tpl}`.replace("{{x}}", x);
      const rows = [
        {{ step: 2, prompt: p("old"), base: "b", adapted: "a", adapter: "default" }},
        {{ step: 4, prompt: p("2+2"), input: "2+2", base: "22 and", adapted: "4", adapter: "default",
          truncated: {{ base: true, adapted: false }}, max_new_tokens: 6 }},
        {{ step: 4, prompt: p("3+3"), input: "3+3", base: "6", adapted: "six and more", adapter: "default",
          truncated: {{ base: false, adapted: true }}, max_new_tokens: 6 }}];
      const t = m.probeTable(rows);
      const one = m.probeTable([{{ step: 1, prompt: p("5+5"), input: "5+5", base: "x", adapted: "y" }}]);
      return {{ head: t.kids[0].kids.map(text), inputs: find(t, "probe-input").map(text),
        rows: find(t, "probe-row").map((r) => r.kids.slice(1).map(text)),
        cuts: find(t, "probe-truncated").map(text), one: find(one, "probe-input").map(text),
        oneHead: one.kids[0].kids.map(text), none: m.probeTable([]) }};""")
    assert res["head"] == ["input (probes @ step 4)", "base", "default"]  # the compare widget's column names
    assert res["inputs"] == ["2+2", "3+3"]  # the shared template folded away, as in the compare widget
    assert res["rows"] == [["22 and … (cut at 6 tokens)", "4"], ["6", "six and more … (cut at 6 tokens)"]]
    assert res["cuts"] == [" … (cut at 6 tokens)"] * 2
    assert res["one"] == ["5+5"] and res["oneHead"][2] == "adapter"  # one probe: the engine's input field
    assert res["none"] is None


def test_rank_table_shows_each_rank_memory_and_gpu_peak_only_when_reported(tmp_path):
    res = run_js(tmp_path, "dashboard.js", _html_document() + """
      const cpu = m.rankTable([{ rank: 0, rss: 2 ** 30 }, { rank: 1, rss: 2 ** 29 }]);
      const gpu = m.rankTable([{ rank: 0, rss: 2 ** 30, gpu_peak: 3 * 2 ** 30 }]);
      return { cpuRows: cpu.kids.map((r) => r.kids.map(text)), gpuRows: gpu.kids.map((r) => r.kids.map(text)),
        none: m.rankTable([]) };""")
    assert res["cpuRows"] == [["rank", "RSS"], ["0", "1024 MiB"], ["1", "512 MiB"]]
    assert res["gpuRows"] == [["rank", "RSS", "GPU peak"], ["0", "1024 MiB", "3072 MiB"]]
    assert res["none"] is None


# ------------------------------------------------------------------ render clean-up
_ANY = """// A universal stand-in for the DOM: any property is another stand-in, calls return one, iteration is empty.
function fake(name = "x") {
  const store = {};
  return new Proxy(function () {}, {
    get(t, k) {
      if (k === Symbol.iterator) return function* () {};
      if (k === Symbol.toPrimitive) return (hint) => (hint === "number" ? 0 : "");
      if (k === "then" || typeof k === "symbol") return undefined;
      if (k === "length") return 0;
      if (!(k in store)) store[k] = fake(k);
      return store[k];
    },
    set(t, k, v) { store[k] = v; return true; },
    has() { return true; },
    apply() { return fake(name + "()"); },
  });
}
globalThis.document = fake("document");
globalThis.window = fake("window");
"""

WIDGETS = ["breakdown", "compare", "dashboard", "planner", "playground", "studio"]


@pytest.mark.parametrize("widget", WIDGETS)
def test_every_render_returns_its_clean_up_and_it_removes_the_model_listeners(tmp_path, widget):
    """Two views of one model (a second display, a re-render): each clean-up removes exactly its own listeners."""
    state = {}
    if widget == "planner":  # it computes the plan on render, from the synced state
        from qlora_nb.memory.planner import plan
        from qlora_nb.views.planner import PlannerWidget

        w = PlannerWidget(plan("smollm2-135m"))
        state = {k: v for k, v in w.get_state().items() if not k.startswith("_")}
        w.close()
    (tmp_path / "w.mjs").write_text(esm(f"{widget}.js"), encoding="utf-8")
    script = _ANY + f"""const state = {json.dumps(state)};
const listeners = [];
const model = {{ get: (k) => (k in state ? state[k] : fake("value")), set() {{}}, save_changes() {{}}, send() {{}},
  on: (n, f) => listeners.push([n, f]),
  off: (n, f) => {{ const i = listeners.findIndex(([a, b]) => a === n && b === f); if (i >= 0) listeners.splice(i, 1); }} }};
const w = (await import('./w.mjs')).default;
const first = w.render({{ model, el: fake("host") }});
const one = listeners.length;
const second = w.render({{ model, el: fake("host") }});
const two = listeners.length;
first();
const afterFirst = listeners.slice();
second();
console.log(JSON.stringify({{ kind: typeof first, one, two, afterFirst: afterFirst.length, left: listeners.length }}));
"""
    out = subprocess.run(["node", "--input-type=module", "-e", script], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["kind"] == "function"
    assert res["two"] == 2 * res["one"] and res["afterFirst"] == res["one"] and res["left"] == 0, res
    if widget != "planner":  # the planner redraws from its own inputs; the others follow the model
        assert res["one"] > 0


def test_views_register_model_listeners_only_through_listen():
    """A ``model.on`` outside format.js's ``listen`` would escape the clean-up that render returns."""
    from qlora_nb.views.base import asset

    for widget in WIDGETS + ["chart"]:
        src = asset(f"{widget}.js").read_text(encoding="utf-8")
        assert "model.on(" not in src, widget


# ------------------------------------------------------------------ one chart geometry
CURVES = [
    ({"steps": [1], "loss": [2.0], "lr": [0.0], "eval_steps": [], "eval_loss": []}, 60),
    ({"steps": [1, 2, 3], "loss": [3.0, 2.0, 1.0], "lr": [1.0, 1.0, 1.0]}, None),
    ({"steps": list(range(1, 1501)), "loss": [5 / (1 + i / 50) for i in range(1500)],
      "lr": [2e-4 * min(1.0, i / 100) for i in range(1500)], "eval_steps": list(range(100, 1501, 100)),
      "eval_loss": [4 / (1 + i) + 0.1234 for i in range(15)]}, 2000),
    ({"steps": [5, 10], "loss": [1234.5, 0.000012], "lr": []}, 11),
]


def _elements_of_svg(svg: str) -> list[tuple]:
    import xml.etree.ElementTree as ET

    out = []
    for e in ET.fromstring(svg).iter():
        tag = e.tag.split("}")[-1]
        out.append(_geometry(tag, e.attrib, e.text if tag == "text" else None))
    return [g for g in out if g]


def _geometry(tag: str, a: dict, text) -> tuple | None:
    """What both drawings must agree on: element kind, coordinates, sizes and label text (not colours/classes)."""
    num = lambda k: round(float(a[k]), 1)  # noqa: E731
    if tag == "polyline":
        return ("polyline", tuple(tuple(round(float(v), 1) for v in p.split(",")) for p in a["points"].split()))
    if tag == "circle":
        return ("circle", num("cx"), num("cy"), float(a["r"]))
    if tag == "line":
        return ("line", num("x1"), num("x2"), num("y1"), num("y2"))
    if tag == "text":
        return ("text", num("x"), num("y"), a.get("text-anchor", "start"), text)
    if tag == "rect":
        return ("rect", num("x"), num("y"), num("width"), num("height"))
    return None


def test_live_chart_and_saved_fallback_draw_the_same_geometry(tmp_path):
    """widgets/chart.js (live) and views/chart.py (saved fallback) from the same curves: same points, markers,
    thinning, axes and labels."""
    from qlora_nb.views.chart import loss_svg

    body = f"""const curves = {json.dumps(CURVES)};
      const walk = (n, out = []) => {{ out.push({{ tag: n.tag, attrs: n.attrs, text: n.text ?? null }});
        n.kids.filter((k) => typeof k !== "string").forEach((k) => walk(k, out)); return out; }};
      return curves.map(([c, max]) => walk(m.lossChart(c, max)));"""
    drawn = run_js(tmp_path, "chart.js", body)
    for (curve, max_steps), js in zip(CURVES, drawn, strict=True):
        live = [g for e in js if (g := _geometry(e["tag"], e["attrs"], e["text"]))]
        saved = _elements_of_svg(loss_svg(curve, max_steps))
        assert len(live) == len(saved), (len(live), len(saved))
        for a, b in zip(live, saved, strict=True):
            if a[0] == "polyline":  # toFixed(1) and :.1f may round a half differently
                assert len(a[1]) == len(b[1]) and all(abs(x - y) <= 0.11 for p, q in zip(a[1], b[1], strict=True)
                                                      for x, y in zip(p, q, strict=True)), (a[0], curve)
            else:
                assert a[0] == b[0] and a[-1] == b[-1], (a, b)
                assert all(abs(x - y) <= 0.11 for x, y in zip(a[1:-1], b[1:-1], strict=True)
                           if isinstance(x, float)), (a, b)


# ------------------------------------------------------------------ the ES-module inliner's limits
@pytest.mark.parametrize("widget", WIDGETS)
def test_every_inlined_widget_module_parses_with_its_helpers_in_one_scope(tmp_path, widget):
    """esm() puts a widget and its helpers in one module scope: node must accept it (no top-level name clash,
    one default export) and nothing relative may be left to resolve from anywidget's blob URL."""
    text = esm(f"{widget}.js")
    assert 'from "./' not in text and "from './" not in text
    assert text.count("export default") == 1
    (tmp_path / "w.mjs").write_text(text, encoding="utf-8")
    out = subprocess.run(["node", "--check", str(tmp_path / "w.mjs")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_the_inliner_refuses_what_it_cannot_inline(tmp_path, monkeypatch):
    from qlora_nb.views import base

    monkeypatch.setattr(base, "asset", lambda name: tmp_path / name)
    (tmp_path / "h.js").write_text("export const a = 1;\nexport function b() { return a; }\n", encoding="utf-8")
    (tmp_path / "ok.js").write_text('import { a, b } from "./h.js";\nimport { b } from "./h.js";\n'
                                    "export default { render() { return b() + a; } };\n", encoding="utf-8")
    text = base.esm("ok.js")
    assert text.count("export const a = 1;") == 1 and "import" not in text  # each helper once
    bad = {
        "multi.js": 'import {\n  a,\n} from "./h.js";\n',
        "default.js": 'import h from "./h.js";\n',
        "star.js": 'import * as h from "./h.js";\n',
        "bare.js": 'import { a } from "lodash";\n',
        "side.js": 'import "./h.js";\n',
        "alias.js": 'import { a as c } from "./h.js";\n',
    }
    for fname, src in bad.items():
        (tmp_path / fname).write_text(src, encoding="utf-8")
        with pytest.raises(ValueError, match=rf"widgets/{fname}, line 1: .* is not an import esm\(\) can inline"):
            base.esm(fname)
    (tmp_path / "dh.js").write_text("export default 1;\n", encoding="utf-8")
    (tmp_path / "uses.js").write_text('import { x } from "./dh.js";\n', encoding="utf-8")
    with pytest.raises(ValueError, match="cannot 'export default'"):
        base.esm("uses.js")
    (tmp_path / "dyn.js").write_text('const m = await import("./h.js");\n', encoding="utf-8")
    assert "import(" in base.esm("dyn.js")  # a dynamic import is left alone
