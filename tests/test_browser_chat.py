"""The chat playground in a real browser: JupyterLab + headless Chromium, a two-turn chat with two columns (base and
a briefly trained adapter) in both history modes.

Each reply streams (both columns are seen partly filled at the same moment: they advance together), and the second
turn's rendered prompt is the right one: with "same history" both columns' prompts carry the base's first answer,
with "own history" each column's prompt carries its own. Screenshots of both modes in the light and dark themes go
to ``test-artifacts/browser-chat/`` (``QLORA_NB_UPDATE_SCREENSHOTS=1`` also copies them to ``docs/screenshots/``).
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
    set_theme,
    write_notebook,
)

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser-chat"
DOCS_SHOTS = ROOT / "docs" / "screenshots"
NOTEBOOK = "chat.ipynb"
UPDATE = os.environ.get("QLORA_NB_UPDATE_SCREENSHOTS") == "1"
TIMEOUT = float(os.environ.get("QLORA_NB_BROWSER_TIMEOUT", "900"))
TRAIN = ("%%qlora_train -o run\ndata: currencies_chat.jsonl\nmax_steps: 4\nlearning_rate: 0.002\nbatch_size: 4\n"
         "eval_steps: 1000\nn_probes: 0")
CELLS = ["%load_ext qlora_nb", "%qlora_load smollm2-135m", TRAIN, "%qlora_playground --chat"]
TURNS = ("Which currency does Japan use?", "And Brazil?")

_STATE = """() => {
  const root = document.querySelector('[data-testid="qlora-chat"]');
  const q = (id) => root ? root.querySelector(`[data-testid="${id}"]`) : null;
  const cols = root ? Array.from(root.querySelectorAll('[data-testid="chat-column"]')) : [];
  return {
    status: q("chat-status") ? q("chat-status").getAttribute("data-status") : null,
    error: q("chat-error") ? q("chat-error").textContent : "",
    history: root ? root.getAttribute("data-history") : null,
    turns: root ? Number(root.getAttribute("data-turns")) : 0,
    code: q("chat-code") ? q("chat-code").textContent : "",
    columns: cols.map((c) => ({ name: c.getAttribute("data-column"), n: Number(c.getAttribute("data-n-tokens")),
      done: c.getAttribute("data-done") === "1",
      replies: Array.from(c.querySelectorAll('[data-role="assistant"]')).map((b) => b.textContent.replace("▍", "")),
      users: Array.from(c.querySelectorAll('[data-role="user"]')).length })),
    rendered: Object.fromEntries(Array.from(root ? root.querySelectorAll('[data-testid="chat-rendered"]') : [])
      .map((p) => [p.getAttribute("data-column"), p.textContent])),
  };
}"""


class Lab(Poller):
    state_js = _STATE

    def until(self, what: str, pred, timeout: float = TIMEOUT, poll_ms: int = 60) -> dict:
        return super().until(what, pred, timeout, poll_ms)

    def chat(self, testid: str):
        return self.page.locator('[data-testid="qlora-chat"]').locator(f'[data-testid="{testid}"]')

    def shot(self, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        loc = self.page.locator('[data-testid="qlora-chat"]').first
        loc = loc.locator("xpath=ancestor::div[contains(@class, 'jp-OutputArea-output')][1]")
        loc.scroll_into_view_if_needed(timeout=10_000)
        loc.screenshot(path=str(path), timeout=20_000)
        return path

    def send(self, text: str, turn: int) -> dict:
        """Type ``text``, press Send, wait for both replies; asserts both columns streamed side by side."""
        start = len(self.samples)
        self.chat("chat-input").fill(text)
        self.chat("chat-send").click()
        s = self.until(f"turn {turn}", lambda s: s["status"] == "done" and s["turns"] == turn
                       and len(s["columns"]) == 2 and all(c["done"] for c in s["columns"]))
        final = {c["name"]: c["n"] for c in s["columns"]}
        assert all(n > 1 for n in final.values()), s
        together = [x for x in self.samples[start:] if x["status"] == "generating" and len(x["columns"]) == 2
                    and all(0 < c["n"] < final[c["name"]] for c in x["columns"])]
        assert together, f"turn {turn}: never saw both columns partly filled at once (final {final})"
        return s


def _notebook(folder: Path) -> None:
    write_notebook(folder / NOTEBOOK, CELLS)
    shutil.copy2(ROOT / "notebooks" / "data" / "currencies_chat.jsonl", folder / "currencies_chat.jsonl")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    fresh_artifacts(ARTIFACTS)
    work = tmp_path_factory.mktemp("lab")
    folder = work / "nb"
    folder.mkdir()
    _notebook(folder)
    with jupyter_lab(folder, work) as server, chromium_page(ARTIFACTS, viewport=(1300, 1800)) as (page, _requests):
        try:
            open_notebook(page, server, NOTEBOOK)
            run_all_cells(page, TIMEOUT)
            yield Lab(page)
        finally:
            (ARTIFACTS / "jupyterlab.log").write_text(server.log_tail(200_000))


def _two_turns(lab: Lab) -> dict:
    lab.send(TURNS[0], 1)
    return lab.send(TURNS[1], 2)


def _check_prompt(prompt: str, first_reply: str) -> None:
    assert TURNS[0] in prompt and prompt.rstrip("\n").endswith("<|im_start|>assistant"), prompt
    assert prompt.index(TURNS[0]) < prompt.index(first_reply.strip()) < prompt.index(TURNS[1]), prompt
    assert prompt.count("<|im_start|>user") == 2, prompt


def test_two_turn_chat_same_history(lab):
    s = lab.state()
    assert s["status"] == "idle" and s["history"] == "same", s
    lab.chat("chat-max_new_tokens").fill("20")
    lab.chat("chat-max_new_tokens").press("Enter")
    lab.chat("chat-system").fill("Answer with the ISO 4217 currency code only.")
    lab.chat("chat-system").press("Enter")
    s = _two_turns(lab)
    base, adapted = s["columns"]
    assert (base["name"], adapted["name"]) == ("base", "default") and base["users"] == 2, s
    assert s["rendered"]["base"] == s["rendered"]["default"], s  # one context for both columns
    _check_prompt(s["rendered"]["base"], base["replies"][0])
    assert "Answer with the ISO 4217 currency code only." in s["rendered"]["base"]
    lab.chat("chat-prompt").locator("summary").click()
    lab.chat("chat-copy").click()
    s = lab.until("the copied cell", lambda s: s["code"].startswith("reply = qlora.chat("), timeout=30)
    assert TURNS[1] in s["code"] and "max_new_tokens=20" in s["code"], s["code"]
    lab.shot("chat-same-light")
    set_theme(lab.page, "JupyterLab Dark")
    lab.shot("chat-same-dark")
    set_theme(lab.page, "JupyterLab Light")


def test_two_turn_chat_own_history(lab):
    lab.chat("chat-clear").click()
    lab.until("the cleared chat", lambda s: s["turns"] == 0 and s["status"] == "idle", timeout=30)
    lab.chat("chat-history-own").click()
    lab.until("own history", lambda s: s["history"] == "own", timeout=30)
    s = _two_turns(lab)
    for col in s["columns"]:
        _check_prompt(s["rendered"][col["name"]], col["replies"][0])  # each column continued from its own answer
    base, adapted = s["columns"]
    if base["replies"][0].strip() != adapted["replies"][0].strip():
        assert s["rendered"]["base"] != s["rendered"]["default"], s
    set_theme(lab.page, "JupyterLab Dark")
    lab.shot("chat-own-dark")
    set_theme(lab.page, "JupyterLab Light")
    shot = lab.shot("chat-own-light")
    if UPDATE:
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, DOCS_SHOTS / "chat.png")
