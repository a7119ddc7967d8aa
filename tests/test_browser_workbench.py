"""The workbench end to end in a real browser: JupyterLab + headless Chromium drive the studio and the playground.

A user types a data path into the studio, sees the preview, sets max_steps (and a learning rate high enough that
a short run visibly changes the model), clicks Train, watches the loss curve grow, clicks Stop, clicks Resume and
sees training continue from the checkpoint's step. Then, in the playground, a prompt is typed and two columns
(base, adapter) fill token by token, with the tokens that depart from the base highlighted.

Screenshots go to ``test-artifacts/browser-workbench/``. With ``QLORA_NB_UPDATE_SCREENSHOTS=1`` the run is longer
(30 steps at lr 1e-3) so the README's playground shows an adapter that does the demo task, and the studio and
playground screenshots are copied to ``docs/screenshots/``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from browser_support import (
    Poller,
    chromium_page,
    fresh_artifacts,
    jupyter_lab,
    open_notebook,
    run_all_cells,
    write_notebook,
)

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser-workbench"
DOCS_SHOTS = ROOT / "docs" / "screenshots"
NOTEBOOK = "workbench.ipynb"
UPDATE = os.environ.get("QLORA_NB_UPDATE_SCREENSHOTS") == "1"
TIMEOUT = float(os.environ.get("QLORA_NB_BROWSER_TIMEOUT", "1200"))
# Short on CI (2 cores); the README's screenshot needs the adapter trained long enough to do the task.
STEPS = int(os.environ.get("QLORA_NB_WORKBENCH_STEPS", "30" if UPDATE else "10"))
LEARNING_RATE = "0.001" if UPDATE else "0.002"
PROMPT = "Extract the person's name, age, city and job as JSON.\nAt 41, Ines Moreau works as a baker in Quito."
CELLS = ["%load_ext qlora_nb", "%qlora_load smollm2-135m", "%qlora_studio", "%qlora_playground --completion"]

_STATE = """() => {
  const q = (root, id) => root ? root.querySelector(`[data-testid="${id}"]`) : null;
  const studio = document.querySelector('[data-testid="qlora-studio"]');
  const run = q(studio, "studio-run");
  const dash = document.querySelector('[data-testid="qlora-dashboard"]');
  const lp = q(dash, "loss-points");
  const chart = q(dash, "loss-chart");
  const pg = document.querySelector('[data-testid="qlora-playground"]');
  const stopBox = q(studio, "studio-stop") ? q(studio, "studio-stop").getBoundingClientRect() : null;
  const chartBox = chart ? chart.getBoundingClientRect() : null;
  return {
    settingsOpen: q(studio, "studio-settings") ? q(studio, "studio-settings").open : null,
    stopToChartEnd: stopBox && chartBox ? chartBox.bottom - stopBox.top : null,  // px from Stop to the curve's end
    status: q(studio, "studio-status") ? q(studio, "studio-status").getAttribute("data-status") : null,
    previewRows: studio ? studio.querySelectorAll('[data-testid="studio-preview-row"]').length : 0,
    code: q(studio, "studio-code") ? q(studio, "studio-code").textContent : "",
    error: q(studio, "studio-error") ? q(studio, "studio-error").textContent : "",
    train: q(studio, "studio-train") ? !q(studio, "studio-train").disabled : false,
    resume: q(studio, "studio-resume") ? !q(studio, "studio-resume").disabled : false,
    stop: q(studio, "studio-stop") ? !q(studio, "studio-stop").disabled : false,
    checkpoint: run ? run.getAttribute("data-checkpoint-step") : "",
    firstStep: run ? run.getAttribute("data-first-step") : "",
    resumedFrom: run ? run.getAttribute("data-resumed-from") : "",
    dashStatus: q(dash, "train-status") ? q(dash, "train-status").getAttribute("data-status") : null,
    points: lp ? Number(lp.getAttribute("data-count")) : 0,
    curve: chart ? Number(chart.getAttribute("data-points")) : 0,
    lastX: chart && chart.getAttribute("data-last-step") ? Number(chart.getAttribute("data-last-step")) : null,
    pgStatus: q(pg, "playground-status") ? q(pg, "playground-status").getAttribute("data-status") : null,
    columns: pg ? Array.from(pg.querySelectorAll('[data-testid="playground-column"]')).map((c) => ({
      name: c.getAttribute("data-column"), n: Number(c.getAttribute("data-n-tokens")), done: c.getAttribute("data-done") === "1",
      diff: c.querySelectorAll('[data-diff="1"]').length, text: c.innerText })) : [],
  };
}"""


class Bench(Poller):
    state_js = _STATE

    def failed(self, s: dict) -> bool:
        return bool(s["error"]) and s["status"] == "error"

    def until(self, what: str, pred, timeout: float = TIMEOUT, poll_ms: int = 150) -> dict:
        return super().until(what, pred, timeout, poll_ms)

    def studio(self, testid: str):
        return self.page.locator('[data-testid="qlora-studio"]').locator(f'[data-testid="{testid}"]')

    def shot(self, name: str, selector: str | None = None, whole_output: bool = True) -> Path:
        path = ARTIFACTS / f"{name}.png"
        if selector is None:
            self.page.screenshot(path=str(path))
            return path
        loc = self.page.locator(selector).first
        if whole_output:
            loc = loc.locator("xpath=ancestor::div[contains(@class, 'jp-OutputArea-output')][1]")
        loc.scroll_into_view_if_needed(timeout=10_000)
        loc.screenshot(path=str(path), timeout=20_000)
        return path


def _notebook(folder: Path) -> None:
    write_notebook(folder / NOTEBOOK, CELLS)
    shutil.copy2(ROOT / "qlora_nb" / "data" / "demo" / "train.jsonl", folder / "people.jsonl")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    fresh_artifacts(ARTIFACTS)
    work = tmp_path_factory.mktemp("lab")
    folder = work / "nb"
    folder.mkdir()
    _notebook(folder)
    with jupyter_lab(folder, work) as server, chromium_page(ARTIFACTS, viewport=(1300, 2200)) as (page, _requests):
        try:
            open_notebook(page, server, NOTEBOOK)
            b = Bench(page)
            run_all_cells(page, TIMEOUT)
            yield b
        finally:
            (ARTIFACTS / "jupyterlab.log").write_text(server.log_tail(200_000))


def _type(locator, text: str) -> None:
    locator.fill(text)
    locator.press("Enter")  # commits the field ("change"), as a user pressing Enter or leaving it


def test_studio_train_stop_resume(bench):
    s = bench.state()
    assert s["status"] == "idle" and not s["train"], s  # no data yet: Train is disabled
    _type(bench.studio("studio-data"), "people.jsonl")
    s = bench.until("the data preview", lambda s: s["previewRows"] >= 1 and s["train"])
    bench.shot("studio-preview", '[data-testid="qlora-studio"]')
    for name, value in (("max_steps", str(STEPS)), ("learning_rate", LEARNING_RATE), ("batch_size", "4"),
                        ("eval_steps", "1000")):
        _type(bench.studio(f"opt-{name}"), value)
    bench.until("the options in the cell", lambda s: f"max_steps: {STEPS}" in s["code"] and "eval_steps: 1000" in s["code"])
    bench.studio("studio-train").click()
    growing = []
    bench.until("the loss curve to grow", lambda s: s["dashStatus"] == "running" and s["points"] >= 1
                and (growing.append((s["points"], s["curve"])) or True) and s["points"] >= 3 and s["curve"] >= 3)
    assert len({p for p, _ in growing}) >= 2, f"the loss points never grew while running: {growing}"
    bench.shot("studio-training", '[data-testid="qlora-studio"]')
    running = bench.state()
    assert running["stop"] and not running["train"] and not running["resume"], running
    # issue 23: Train/Stop and the curve are visible together in a 1,000 px window (the settings fold)
    assert running["settingsOpen"] is False and 0 < running["stopToChartEnd"] <= 1000, running
    bench.studio("studio-stop").click()
    s = bench.until("the stop", lambda s: s["status"] == "stopped" and s["checkpoint"] not in ("", None))
    ckpt = int(s["checkpoint"])
    assert 3 <= ckpt < STEPS and s["resume"] and s["dashStatus"] == "stopped", s
    bench.shot("studio-stopped", '[data-testid="qlora-studio"]')
    bench.studio("studio-resume").click()
    s = bench.until("the resumed run to finish", lambda s: s["status"] == "done")
    bench.shot("studio-resumed", '[data-testid="qlora-studio"]')
    s = bench.until("the curve to be drawn to the last step", lambda s: s["lastX"] == STEPS, timeout=30)
    assert int(s["resumedFrom"]) == ckpt and int(s["firstStep"]) == ckpt + 1, s  # continued from the checkpoint
    assert s["dashStatus"] == "done" and s["points"] == STEPS and s["lastX"] == STEPS, s
    assert s["curve"] == STEPS and not s["resume"] and s["train"], s


def test_playground_streams_two_columns_with_differences(bench):
    pg = bench.page.locator('[data-testid="qlora-playground"]')
    pg.locator('[data-testid="playground-prompt"]').fill(PROMPT)
    _type(pg.locator('[data-testid="gen-max_new_tokens"]'), "40")
    pg.locator('[data-testid="playground-generate"]').click()
    s = bench.until("both columns", lambda s: s["pgStatus"] == "done" and len(s["columns"]) == 2, poll_ms=60)
    base, adapted = s["columns"]
    assert (base["name"], adapted["name"]) == ("base", "default") and base["n"] > 1 and adapted["n"] > 1, s
    # token by token: while generating, each column was seen partly filled
    for col in ("base", "default"):
        seen = sorted({c["n"] for x in bench.samples if x["pgStatus"] == "generating"
                       for c in x["columns"] if c["name"] == col})
        final = next(c["n"] for c in s["columns"] if c["name"] == col)
        assert any(0 < n < final for n in seen), f"column {col} never showed a partial output: {seen} of {final}"
    # the adapter marks the tokens the base did not write (aligned: a base that is a prefix of it has no marks);
    # and the columns filled together: the adapter column was partly filled while the base was still generating
    assert adapted["diff"] > 0, s
    assert any(0 < c["n"] for x in bench.samples if x["pgStatus"] == "generating" for c in x["columns"]
               if c["name"] == "default" and not next(b["done"] for b in x["columns"] if b["name"] == "base")), \
        "the adapter column only started after the base had finished"
    shot = bench.shot("playground", '[data-testid="qlora-playground"]')
    if UPDATE:
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, DOCS_SHOTS / "playground.png")
        shutil.copy2(ARTIFACTS / "studio-resumed.png", DOCS_SHOTS / "studio.png")
