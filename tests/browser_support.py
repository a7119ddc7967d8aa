"""Helpers for the end-to-end browser test: a private JupyterLab server and a headless Debian Chromium.

Why these choices:
- JupyterLab runs from ``sys.executable`` (the venv), so it sees the installed wheel and the
  anywidget / ipywidgets / plotly lab extensions exactly as a user's ``pip install`` does.
- Settings, workspaces and runtime files live in a temporary folder, so a developer's own
  JupyterLab state (open tabs, themes, news prompts) cannot change what the test sees.
- ``expose_app_in_browser`` gives ``window.jupyterapp``; the test drives JupyterLab through its
  command registry (run all, insert a cell) rather than through fragile keyboard shortcuts,
  and reads what a user would see from the DOM.
- Chromium is the system one (``/usr/bin/chromium``, installed by ``make browser-deps``);
  Playwright never downloads a browser here.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

CHROMIUM = os.environ.get("QLORA_NB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
LOCAL_SCHEMES = {"data", "blob", "about", "chrome", "chrome-extension", "devtools"}

# JupyterLab user settings that keep the page quiet and offline: no news, no update checks.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
    # Render every cell: windowed notebooks detach off-screen outputs, which the DOM assertions read.
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_available() -> bool:
    return Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)


@dataclass
class LabServer:
    """A running JupyterLab: ``url(path)`` gives an authenticated address on 127.0.0.1."""

    port: int
    token: str
    root_dir: Path
    proc: subprocess.Popen
    log_path: Path

    def url(self, path: str = "lab") -> str:
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}{sep}token={self.token}"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"


def _wait_ready(server: LabServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(server.url("api/status"), timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"JupyterLab did not answer within {timeout:.0f} s:\n{server.log_tail()}")


@contextmanager
def jupyter_lab(notebooks: Path, work: Path, env: dict[str, str] | None = None,
                timeout: float = 90.0) -> Iterator[LabServer]:
    """Start ``python -m jupyter lab`` on a free 127.0.0.1 port with token auth, serving a copy of ``notebooks``."""
    root = work / "root"
    shutil.copytree(notebooks, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    settings = work / "lab-settings"
    for rel, value in LAB_SETTINGS.items():
        target = settings / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(value))
    port, token = free_port(), secrets.token_hex(16)
    run_env = {**os.environ, **(env or {}),
               "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces"),
               "JUPYTER_RUNTIME_DIR": str(work / "runtime"), "JUPYTER_CONFIG_DIR": str(work / "config"),
               "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.open_browser=False",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI often run as root
        cmd.append("--allow-root")
    log_path = work / "jupyterlab.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below, after the process
    proc = subprocess.Popen(cmd, cwd=root, env=run_env, stdout=log, stderr=subprocess.STDOUT)
    server = LabServer(port, token, root, proc, log_path)
    try:
        _wait_ready(server, timeout)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@dataclass
class RequestLog:
    """Every URL the page asked for; ``external()`` lists those that left the machine."""

    urls: list[str] = field(default_factory=list)

    def record(self, request) -> None:
        self.urls.append(request.url)

    def external(self) -> list[str]:
        out = []
        for u in self.urls:
            p = urlparse(u)
            if p.scheme in LOCAL_SCHEMES:
                continue
            if p.hostname not in LOCAL_HOSTS:
                out.append(u)
        return out


@contextmanager
def chromium_page(artifacts: Path, viewport=(1400, 1000)):
    """A headless system-Chromium page; yields ``(page, requests)``. Non-local requests are recorded and aborted."""
    from playwright.sync_api import sync_playwright

    requests = RequestLog()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]},
                                          service_workers="block")
            page = context.new_page()
            page.on("request", requests.record)
            console = artifacts / "browser-console.log"

            def on_console(msg) -> None:
                with open(console, "a", encoding="utf-8") as fh:
                    fh.write(f"[{msg.type}] {msg.text}\n")

            page.on("console", on_console)

            def guard(route) -> None:  # never wait on the internet; the assertion reads `requests`
                host = urlparse(route.request.url).hostname
                if host in LOCAL_HOSTS:
                    route.continue_()
                else:
                    route.abort()

            page.route("**/*", guard)
            yield page, requests
        finally:
            browser.close()


# --------------------------------------------------------------------------- JupyterLab driving
_NOTEBOOK_STATE = """() => {
  const app = window.jupyterapp;
  const w = app && app.shell.currentWidget;
  if (!w || !w.content || !w.sessionContext) return null;
  const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
  const cells = [];
  const models = w.content.model ? w.content.model.cells : [];
  for (let i = 0; i < models.length; i++) {
    const c = models.get(i);
    const out = { type: c.type, source: c.sharedModel.getSource().slice(0, 80) };
    if (c.type === "code") {
      out.count = c.executionCount;
      out.running = c.executionState === "running";
      out.error = null;
      for (let j = 0; j < c.outputs.length; j++) {
        const o = c.outputs.get(j).toJSON();
        if (o.output_type === "error") out.error = `${o.ename}: ${o.evalue}`;
      }
    }
    cells.push(out);
  }
  return { kernel: kernel ? kernel.status : "none", cells };
}"""


def open_notebook(page, server: LabServer, name: str, timeout_ms: int = 120_000) -> None:
    """Open ``name`` in JupyterLab and wait until its kernel is idle."""
    page.goto(server.url(f"lab/tree/{name}"), wait_until="domcontentloaded", timeout=timeout_ms)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                           " && window.jupyterapp.shell.currentWidget.sessionContext", timeout=timeout_ms)
    page.wait_for_function("""() => { const w = window.jupyterapp.shell.currentWidget;
        const k = w.sessionContext.session && w.sessionContext.session.kernel;
        return k && k.status === 'idle'; }""", timeout=timeout_ms)


def notebook_state(page) -> dict | None:
    return page.evaluate(_NOTEBOOK_STATE)


def run_command(page, command: str, args: dict | None = None) -> None:
    """Start a JupyterLab command without awaiting it (``run-all`` resolves only when every cell is done)."""
    page.evaluate("([c, a]) => { window.jupyterapp.commands.execute(c, a || {}); }", [command, args or {}])


def append_code_cell(page, source: str) -> int:
    """Add a code cell at the end of the open notebook, select it; returns its index."""
    return page.evaluate("""(src) => {
        const w = window.jupyterapp.shell.currentWidget;
        const nb = w.content;
        nb.model.sharedModel.insertCell(nb.model.cells.length, { cell_type: "code", source: src });
        nb.activeCellIndex = nb.model.cells.length - 1;
        return nb.activeCellIndex; }""", source)


def first_error(state: dict | None) -> str | None:
    for i, c in enumerate((state or {}).get("cells", [])):
        if c.get("error"):
            return f"cell {i} ({c['source']!r}): {c['error']}"
    return None


def all_done(state: dict | None, upto: int | None = None) -> bool:
    """True when every code cell (up to ``upto``) has run and the kernel is idle."""
    if not state or state["kernel"] != "idle":
        return False
    code = [c for c in state["cells"][: upto if upto is not None else None] if c["type"] == "code"]
    return all(c.get("count") is not None and not c.get("running") for c in code)


def fresh_artifacts(artifacts: Path) -> None:
    """The test's screenshot folder, emptied (a failure leaves only this run's pictures)."""
    if not chromium_available():
        import pytest

        pytest.fail("no /usr/bin/chromium: run `make browser-deps` (apt-get install chromium)")
    artifacts.mkdir(parents=True, exist_ok=True)
    for old in artifacts.glob("*"):
        old.unlink()


def write_notebook(path: Path, cells: list[str]) -> None:
    """A Python 3 notebook of code ``cells``, unexecuted."""
    code = [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": c} for c in cells]
    nb = {"cells": code, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                     "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb), encoding="utf-8")


def run_all_cells(page, timeout: float) -> None:
    """Run every cell of the open notebook and wait until all are done; a cell's error fails at once."""
    run_command(page, "notebook:run-all-cells")
    deadline = time.monotonic() + timeout
    while not all_done(notebook_state(page)):
        err = first_error(notebook_state(page))
        assert err is None, err
        assert time.monotonic() < deadline, notebook_state(page)
        page.wait_for_timeout(300)


def set_theme(page, theme: str) -> None:
    """Switch JupyterLab's theme ("JupyterLab Light" / "JupyterLab Dark") and wait until it applies."""
    run_command(page, "apputils:change-theme", {"theme": theme})
    light = "true" if "Light" in theme else "false"
    page.wait_for_function(f"() => document.body.dataset.jpThemeLight === '{light}'", timeout=30_000)
    page.wait_for_timeout(500)  # the theme's stylesheet applies after the attribute


def parse_int(text: str) -> int:
    digits = "".join(ch for ch in text if ch.isdigit())
    if not digits:
        raise ValueError(f"no number in {text!r}")
    return int(digits)


class Poller:
    """Reads a widget's state from the DOM (``state_js``) and waits for a predicate, failing with a screenshot.

    A subclass names the widget's own locators and screenshots (``shot``); ``failed(state)`` says when the
    widget itself shows an error worth stopping for.
    """

    state_js = "() => ({})"

    def __init__(self, page) -> None:
        self.page = page
        self.samples: list[dict] = []

    def state(self) -> dict:
        s = self.page.evaluate(self.state_js)
        self.samples.append(s)
        return s

    def failed(self, s: dict) -> bool:
        return s.get("status") == "error"

    def shot(self, name: str) -> Path:
        raise NotImplementedError

    def until(self, what: str, pred, timeout: float, poll_ms: int = 100) -> dict:
        import pytest

        deadline = time.monotonic() + timeout
        while True:
            s = self.state()
            if pred(s):
                return s
            err = first_error(notebook_state(self.page))
            if err or self.failed(s):
                self.shot("failed")
                pytest.fail(f"while waiting for {what}: {err or s.get('error')}")
            if time.monotonic() > deadline:
                self.shot("timeout")
                pytest.fail(f"timed out waiting for {what}; last state: {s}")
            self.page.wait_for_timeout(poll_ms)
