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
