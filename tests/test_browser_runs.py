"""The run history and the task metric in a real browser (JupyterLab + headless Chromium).

Two short runs of the demo model with ``eval_metric: exact_match``: while the first trains, the dashboard's metric
chart gains points (the base's score, then one per eval). Then ``%qlora_runs`` lists both; the user ticks the two
rows and sees their loss and metric curves overlaid and their configs side by side, ``learning_rate`` marked as
differing. Screenshots (light and dark) go to ``test-artifacts/browser-runs/``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from browser_support import (
    all_done,
    chromium_page,
    first_error,
    fresh_artifacts,
    jupyter_lab,
    notebook_state,
    open_notebook,
    run_command,
    set_theme,
    write_notebook,
)

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser-runs"
NOTEBOOK = "runs.ipynb"
TIMEOUT = float(os.environ.get("QLORA_NB_BROWSER_TIMEOUT", "1200"))
THEMES = ("JupyterLab Light", "JupyterLab Dark")
TRAIN = ("%%qlora_train -o {out}\ndata: demo\nmax_steps: 6\neval_steps: 2\nn_probes: 0\nlearning_rate: {lr}\n"
         "eval_metric: exact_match\neval_metric_rows: 4\noutput_dir: runs/{name}\n")
CELLS = ["%load_ext qlora_nb", "%qlora_load smollm2-135m", TRAIN.format(out="r1", lr="5e-4", name="first"),
         TRAIN.format(out="r2", lr="1e-3", name="second"), "%qlora_runs runs"]

_STATE = """() => {
  const q = (root, id) => root ? root.querySelector(`[data-testid="${id}"]`) : null;
  const dash = document.querySelector('[data-testid="qlora-dashboard"]');
  const metric = q(dash, "metric-chart");
  const runs = document.querySelector('[data-testid="qlora-runs"]');
  const loss = q(runs, "runs-chart-loss"), mchart = q(runs, "runs-chart-metric");
  return {
    metricPoints: metric ? Number(metric.getAttribute("data-points")) : 0,
    metricText: q(dash, "task-metric") ? q(dash, "task-metric").parentElement.textContent : "",
    rows: runs ? Array.from(runs.querySelectorAll('[data-testid="run-row"]')).map((r) => r.getAttribute("data-run")) : [],
    lossSeries: loss ? Number(loss.getAttribute("data-series")) : 0,
    metricSeries: mchart ? Number(mchart.getAttribute("data-series")) : 0,
    differs: runs ? Array.from(runs.querySelectorAll('[data-testid="runs-diff-table"] tr[data-differs="true"]'))
      .map((r) => r.getAttribute("data-key")) : [],
    metrics: runs ? Array.from(runs.querySelectorAll('[data-testid="run-metric"]')).map((c) => c.textContent) : [],
  };
}"""


def test_metric_curve_grows_and_runs_overlay(tmp_path):
    fresh_artifacts(ARTIFACTS)
    folder = tmp_path / "nb"
    folder.mkdir()
    write_notebook(folder / NOTEBOOK, CELLS)
    with jupyter_lab(folder, tmp_path) as server, chromium_page(ARTIFACTS, viewport=(1400, 1600)) as (page, _):
        open_notebook(page, server, NOTEBOOK)
        run_command(page, "notebook:run-all-cells")
        seen: list[int] = []
        deadline = time.monotonic() + TIMEOUT
        while True:
            state = notebook_state(page)
            err = first_error(state)
            if err:
                page.screenshot(path=str(ARTIFACTS / "failed.png"))
                pytest.fail(err)
            s = page.evaluate(_STATE)
            if s["metricPoints"] and (not seen or seen[-1] != s["metricPoints"]):
                seen.append(s["metricPoints"])
            if all_done(state):
                break
            if time.monotonic() > deadline:
                page.screenshot(path=str(ARTIFACTS / "timeout.png"))
                pytest.fail(f"timed out; last state {s}")
            page.wait_for_timeout(250)
        # the first dashboard's metric chart grew while it trained: base (1), then evals at steps 2, 4, 6
        assert len(seen) >= 2 and seen == sorted(seen) and seen[-1] == 4, seen
        s = page.evaluate(_STATE)
        assert "exact match" in s["metricText"] and "→" in s["metricText"], s
        loc = page.locator('[data-testid="qlora-dashboard"]').first
        loc.scroll_into_view_if_needed()
        loc.screenshot(path=str(ARTIFACTS / "dashboard-metric.png"))
        assert s["rows"] == ["first", "second"] and all(m.startswith("exact match") for m in s["metrics"]), s
        boxes = page.locator('[data-testid="run-select"]')
        boxes.nth(0).check()
        boxes.nth(1).check()
        page.wait_for_function("() => document.querySelectorAll('[data-testid=\"runs-diff-table\"]').length > 0",
                               timeout=30_000)
        s = page.evaluate(_STATE)
        assert s["lossSeries"] == 4 and s["metricSeries"] == 2, s  # train + eval per run; one metric per run
        assert "learning_rate" in s["differs"] and "output_dir" not in s["differs"], s
        runs = page.locator('[data-testid="qlora-runs"]').first
        for theme in THEMES:
            set_theme(page, theme)
            runs.scroll_into_view_if_needed()
            runs.screenshot(path=str(ARTIFACTS / f"runs-{'dark' if 'Dark' in theme else 'light'}.png"))
        set_theme(page, THEMES[0])
    if os.environ.get("QLORA_NB_UPDATE_SCREENSHOTS") == "1":
        shots = ROOT / "docs" / "screenshots"
        shutil.copy(ARTIFACTS / "runs-light.png", shots / "runs.png")
        shutil.copy(ARTIFACTS / "dashboard-metric.png", shots / "dashboard-metric.png")
