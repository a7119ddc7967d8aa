"""The training dashboard and the text progress printer, driven by events (no browser, no model)."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest

from qlora_nb.events import EventBus
from qlora_nb.views.dashboard import TrainingDashboard
from qlora_nb.views.live import watch
from qlora_nb.views.progress import TextProgress, fmt_duration


class FakeSession:
    """What the views need from a Session: an EventBus, a config with a model name and the stop flag."""

    def __init__(self, with_request_stop: bool = True) -> None:
        self.events = EventBus()
        self.config = SimpleNamespace(model="tiny")
        self.stop_requested = False
        if with_request_stop:
            self.request_stop = lambda: setattr(self, "stop_requested", True)


LEDGER = {"components": {"quantized_weights": 1000, "adapters": 64, "optimizer_states": 512},
          "params": {"total": 10, "trainable": 2, "quantized": 8}, "matrices": [],
          "optimizer_paged": True, "optimizer_name": "paged_adamw_8bit"}


def step(bus: EventBus, i: int, n: int = 60, **kw) -> None:
    bus.emit("step", step=i, loss=2.0 / i, learning_rate=2e-4 * (1 - i / n), tokens_per_s=300.0 + i,
             epoch=i / n, max_steps=n, eta_s=float(n - i), **kw)
    bus.emit("poll", step=i)


def figure_data(dash: TrainingDashboard) -> dict[str, tuple]:
    """What the front-end draws: the synced ``curve`` trait (the chart is redrawn from it after a reload)."""
    c = dash.curve
    return {"train loss": (tuple(c.get("steps", ())), tuple(c.get("loss", ()))),
            "learning rate": (tuple(c.get("steps", ())), tuple(c.get("lr", ()))),
            "eval loss": (tuple(c.get("eval_steps", ())), tuple(c.get("eval_loss", ())))}


def test_events_reach_traits_and_figure():
    s = FakeSession()
    dash = TrainingDashboard.for_session(s, {"max_steps": 6})
    assert len(s.events) == 1 and dash.status == "waiting" and dash.progress["max_steps"] == 6
    s.events.emit("train_begin", max_steps=6)
    assert dash.status == "running"
    for i in range(1, 5):
        step(s.events, i, n=6)
    s.events.emit("eval", step=4, eval_loss=0.75)
    assert dash.n_loss_points == 4 and dash.n_eval_points == 1  # eval forces a redraw
    data = figure_data(dash)
    assert data["train loss"] == ((1, 2, 3, 4), (2.0, 1.0, 2.0 / 3, 0.5))
    assert data["eval loss"] == ((4,), (0.75,))
    assert data["learning rate"][1][0] == pytest.approx(2e-4 * 5 / 6)
    p = dash.progress
    assert (p["step"], p["max_steps"], p["eval_loss"], p["tokens_per_s"]) == (4, 6, 0.75, 304.0)
    assert p["epoch"] == pytest.approx(4 / 6) and p["eta_s"] == 2.0

    s.events.emit("probe", step=4, prompt="2+2=", base="22", adapted="4")
    s.events.emit("probe", step=4, prompt="3+3=", base="33", adapted="6")
    assert [(r["prompt"], r["base"], r["adapted"]) for r in dash.probes] == [("2+2=", "22", "4"), ("3+3=", "33", "6")]

    s.events.emit("ledger", ledger=LEDGER)
    step(s.events, 5, n=6)
    step(s.events, 6, n=6)
    s.events.emit("train_end", step=6)
    assert dash.status == "done" and dash.ledger["optimizer_paged"] is True
    assert dash.ledger["components"]["optimizer_states"] == 512
    assert dash.n_loss_points == 6 and len(figure_data(dash)["train loss"][0]) == 6
    assert len(s.events) == 0  # detached at train_end
    s.events.emit("step", step=7, loss=0.1, max_steps=6)
    assert dash.n_loss_points == 6
    assert "done" in dash.text() and "step 6/6" in dash.text()


def test_throttle_bounds_redraws_but_keeps_every_point():
    s = FakeSession()
    dash = TrainingDashboard.for_session(s, min_interval=60.0)  # nothing is "due" during this test
    before = dash.flushes
    n = 500
    for i in range(1, n + 1):
        step(s.events, i, n=n)
        if i % 100 == 0:
            s.events.emit("eval", step=i, eval_loss=1.0 / i)
    assert dash.flushes - before == 5  # only the 5 evals redraw
    assert dash.n_loss_points == 500 and len(figure_data(dash)["train loss"][0]) == 500
    for i in range(n + 1, n + 11):  # steps after the last eval are not drawn until the end...
        step(s.events, i, n=n + 10)
    assert len(figure_data(dash)["train loss"][0]) == 500
    s.events.emit("train_end", step=n + 10)  # ...which always redraws
    x, y = figure_data(dash)["train loss"]
    assert x == tuple(range(1, n + 11)) and y[-1] == pytest.approx(2.0 / (n + 10))
    assert figure_data(dash)["eval loss"][0] == (100, 200, 300, 400, 500)
    o = dash.overhead()
    assert o["events"] == 2 * (n + 10) + 5 + 1 and o["flushes"] == dash.flushes


def test_throttle_redraws_again_once_the_interval_has_passed():
    s = FakeSession()
    dash = TrainingDashboard.for_session(s, min_interval=0.0, max_overhead=1e9)  # every event is due
    for i in range(1, 11):
        step(s.events, i, n=10)
    assert dash.flushes >= 10 and len(figure_data(dash)["train loss"][0]) == 10


@pytest.mark.parametrize("with_request_stop", [True, False])
def test_stop_button_message_sets_the_stop_flag(with_request_stop):
    s = FakeSession(with_request_stop)
    dash = TrainingDashboard.for_session(s)
    s.events.emit("train_begin", max_steps=10)
    step(s.events, 1, n=10)
    # what the front-end's model.send({event: "stop"}) delivers to the widget's comm handler
    dash._handle_custom_msg({"event": "stop"}, [])
    assert s.stop_requested is True
    step(s.events, 2, n=10)
    assert dash.status == "stopping"
    s.events.emit("train_end", step=2, stopped=True)
    assert dash.status == "stopped"


def test_other_front_end_messages_do_not_stop():
    s = FakeSession()
    dash = TrainingDashboard.for_session(s)
    dash._handle_custom_msg({"event": "something"}, [])
    assert s.stop_requested is False


def test_error_at_train_end_is_shown():
    s = FakeSession()
    dash = TrainingDashboard.for_session(s)
    s.events.emit("train_end", step=3, error="out of memory")
    assert dash.status == "error" and "out of memory" in dash.message


def test_engine_train_end_payload_and_early_stop():
    s = FakeSession()
    dash = TrainingDashboard.for_session(s)
    step(s.events, 4, n=10)
    s.events.emit("train_end", steps=4, interrupted=False, stopped_early=True)
    assert dash.status == "done" and dash.progress["step"] == 4 and "stopped early" in dash.message


@pytest.mark.parametrize("view", ["widget", "text"])
def test_an_exception_during_training_ends_the_view(view, capsys):
    s = FakeSession()
    with pytest.raises(RuntimeError), watch(s, view=view, display=False) as live:
        step(s.events, 1, n=10)
        raise RuntimeError("boom")
    assert len(s.events) == 0
    if view == "widget":
        assert live.status == "error" and live.message == "RuntimeError: boom"
    else:
        assert capsys.readouterr().out.splitlines()[-1].startswith("failed: RuntimeError: boom at step 1/10")


def test_an_error_before_training_begins_removes_the_empty_dashboard(monkeypatch):
    s = FakeSession()
    cleared = []
    with pytest.raises(ValueError), watch(s, view="widget", display=False) as dash:
        monkeypatch.setattr(dash, "clear_display", lambda: cleared.append(True))
        raise ValueError("bad data")
    assert cleared == [True] and len(s.events) == 0
    assert dash.comm is None  # closed


def test_display_is_one_card_with_a_saved_fallback():
    """The card holds the curve (no separate figure); the fallback holds the text, the curve as SVG and
    where the adapter went, with the CSS that swaps it with the live view."""
    s = FakeSession()
    dash = TrainingDashboard.for_session(s, min_interval=0.0, max_overhead=1e9)  # every event is drawn
    s.events.emit("train_begin", max_steps=10, config={"warmup_steps": 2})
    assert dash.phase.startswith("first step")
    step(s.events, 1, n=10)
    assert dash.phase == "" and dash.progress["warmup"] is True
    step(s.events, 3, n=10)
    assert dash.progress["warmup"] is False
    assert dash.progress["mean_tokens_per_s"] == pytest.approx((301.0 + 303.0) / 2)
    data, _ = dash._repr_mimebundle_()
    view = data["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == dash.model_id
    assert data["text/plain"].startswith("training tiny: running · step 3/10 · loss 0.6667")
    s.events.emit("train_end", step=3, adapter_dir="runs/x/adapter", checkpoint="runs/x/checkpoint-3")
    fb = dash.fallback_bundle()
    assert fb["text/plain"].endswith("adapter in runs/x/adapter")
    html = fb["text/html"]
    assert 'data-testid="loss-chart-static" data-points="2"' in html and "runs/x/checkpoint-3" in html
    assert ".qn-live" in html and "qn-fallback" in html
    assert dash.outputs == {"adapter_dir": "runs/x/adapter", "checkpoint": "runs/x/checkpoint-3"}
    json.dumps(dash.get_state())  # every synced trait is JSON-serializable


def test_dashboard_module_has_the_test_ids():
    js = TrainingDashboard._esm
    for testid in ("qlora-dashboard", "loss-points", "stop-button", "train-status"):
        assert f'"{testid}"' in js
    assert "renderLedger" in js and "export default" in js


def test_text_progress_lines():
    s = FakeSession()
    out = io.StringIO()
    TextProgress.for_session(s, every=5, stream=out)
    s.events.emit("train_begin", max_steps=10)
    for i in range(1, 11):
        step(s.events, i, n=10)
        if i == 10:
            s.events.emit("eval", step=10, eval_loss=0.123456)
            s.events.emit("probe", step=10, prompt="2+2=", base="22", adapted="4")
    s.events.emit("train_end", step=10)
    lines = out.getvalue().splitlines()
    assert lines[0] == "step 1/10 loss 2.0000 lr 1.8e-04 301 tok/s eta 0:09"
    assert lines[1] == "step 5/10 loss 0.4000 lr 1.0e-04 305 tok/s eta 0:05"
    assert lines[2] == "step 10/10 loss 0.2000 lr 0.0e+00 310 tok/s eta 0:00"
    assert lines[3] == "eval step 10 eval_loss 0.1235"
    assert lines[4] == "probe @ 10: '2+2=' -> '4'"
    assert lines[5].startswith("done at step 10/10 loss 0.2000 in 0:")
    assert len(lines) == 6 and len(s.events) == 0


def test_text_progress_default_interval_and_stop():
    s = FakeSession()
    out = io.StringIO()
    TextProgress.for_session(s, stream=out)
    for i in range(1, 41):
        step(s.events, i, n=40)
    s.events.emit("train_end", step=40, stopped=True)
    lines = out.getvalue().splitlines()
    assert [ln.split()[1] for ln in lines[:-1]] == ["1/40", "4/40", "8/40", "12/40", "16/40", "20/40", "24/40",
                                                   "28/40", "32/40", "36/40", "40/40"]
    assert lines[-1].startswith("stopped at step 40/40")


def test_fmt_duration():
    assert [fmt_duration(x) for x in (0, 42, 61.4, 3725, None, -1)] == ["0:00", "0:42", "1:01", "1:02:05", "?", "?"]


def test_watch_picks_text_outside_a_kernel(capsys):
    s = FakeSession()
    view = watch(s)
    assert isinstance(view, TextProgress)
    step(s.events, 1, n=2)
    assert capsys.readouterr().out == "step 1/2 loss 2.0000 lr 1.0e-04 301 tok/s eta 0:01\n"
    assert isinstance(watch(FakeSession(), view="widget", display=False), TrainingDashboard)
    with watch(FakeSession(), view="none") as nothing:
        assert nothing is None
    from qlora_nb.errors import QloraError

    with pytest.raises(QloraError, match="unknown progress view 'fancy'"):
        watch(FakeSession(), view="fancy")


KERNEL_CELL = r'''
import time
from types import SimpleNamespace
from qlora_nb.events import EventBus
from qlora_nb.views.dashboard import TrainingDashboard
from qlora_nb.views.live import watch

class S:
    def __init__(self):
        self.events, self.config, self.stop_requested = EventBus(), SimpleNamespace(model="tiny"), False
    def request_stop(self):
        self.stop_requested = True

s = S()
dash = watch(s)  # inside a kernel: the dashboard, displayed with a display id
assert isinstance(dash, TrainingDashboard), dash
if not ROUTE and dash._unroute is not None:
    dash._unroute()
print("MODEL", dash.model_id, dash.stop_live, flush=True)
s.events.emit("train_begin", max_steps=N)
i = 0
for i in range(1, N + 1):
    time.sleep(0.05)  # a busy main thread: a training step
    s.events.emit("step", step=i, loss=1.0 / i, max_steps=N)
    s.events.emit("poll", step=i)
    if s.stop_requested:
        break
s.events.emit("train_end", step=i, stopped=s.stop_requested)
print("END", i, dash.status, flush=True)
'''


def _run_cell_and_click_stop(kc, route: bool, n: int = 60) -> tuple[bool, int, str, list[str]]:
    """Run a fake training loop in a real kernel; send the Stop click while it runs.

    Returns (click handled live, steps run, final status, text/plain of the display and its updates).
    """
    msg_id = kc.execute(f"ROUTE, N = {route}, {n}\n" + KERNEL_CELL)
    live, end, texts = None, None, []
    while end is None:
        msg = kc.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "error":
            raise AssertionError("\n".join(msg["content"]["traceback"]))
        if msg["msg_type"] in ("display_data", "update_display_data"):
            data = msg["content"]["data"]
            # two outputs: the saved fallback (text + HTML) and the live widget view
            assert "application/vnd.jupyter.widget-view+json" in data or "qn-fallback" in data["text/html"], data
            if "text/html" in data:
                texts.append(data["text/plain"])
        if msg["msg_type"] != "stream":
            continue
        for line in msg["content"]["text"].splitlines():
            word = line.split()
            if word[0] == "MODEL":
                live = word[2] == "True"
                click = kc.session.msg("comm_msg", {"comm_id": word[1],
                                                    "data": {"method": "custom", "content": {"event": "stop"}}})
                kc.shell_channel.send(click)
            elif word[0] == "END":
                end = (int(word[1]), word[2])
    kc.get_shell_msg(timeout=60)  # the execute_reply
    return live, end[0], end[1], texts


def test_stop_click_is_handled_while_the_kernel_is_busy():
    """A real ipykernel: the Stop click arrives while the cell's loop runs and stops it within a few steps."""
    jc = pytest.importorskip("jupyter_client.manager")
    import os
    from pathlib import Path

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    km, kc = jc.start_new_kernel(kernel_name="python3", env=env)
    try:
        live, steps, status, texts = _run_cell_and_click_stop(kc, route=True)
        assert live is True and steps < 30 and status == "stopped"
        # what nbclient records: the display's text, refreshed at train_end
        assert texts[0] == "training tiny: waiting" and texts[-1].startswith(f"training tiny: stopped · step {steps}/60")
        # control: without the subshell route the click waits behind the busy cell
        live, steps, status, texts = _run_cell_and_click_stop(kc, route=False)
        assert steps == 60 and status == "done" and texts[-1].startswith("training tiny: done · step 60/60")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


ROWS = [{"instruction": f"Add {a} and {b}.", "input": "", "output": str(a + b)} for a in range(4) for b in range(4)]


def test_dashboard_follows_a_real_training_run(tiny_session, write_jsonl, tmp_path):
    """The engine's events drive the dashboard: every logged loss plotted, evals, probes, ledger, done."""
    data = write_jsonl(ROWS)
    with TrainingDashboard.for_session(tiny_session, {"max_steps": 3}) as dash:
        result = tiny_session.train(data=str(data), max_steps=3, batch_size=4, eval_steps=2, val_split=0.25,
                                    n_probes=1, output_dir=str(tmp_path / "run"), learning_rate=1e-3)
    losses = [(h["step"], h["loss"]) for h in result.history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in result.history if "eval_loss" in h]
    assert len(losses) == 3 and evals and evals[0][0] == 2
    assert dash.status == "done" and dash.n_loss_points == 3 and dash.n_eval_points == len(evals)
    x, y = figure_data(dash)["train loss"]
    assert list(zip(x, y, strict=True)) == losses
    assert list(zip(*figure_data(dash)["eval loss"], strict=True)) == evals
    assert dash.progress["step"] == 3 and dash.progress["max_steps"] == 3
    assert {r["step"] for r in dash.probes} == {s for s, _ in evals} and all(r["prompt"] for r in dash.probes)
    for r in dash.probes:  # the probe input is the row's own field, the column is the adapter's name
        assert r["input"].startswith("Add ") and r["input"] in r["prompt"] and r["input"] != r["prompt"]
        assert r["adapter"] == "default" and set(r["truncated"]) == {"base", "adapted"}
        assert all(isinstance(v, bool) for v in r["truncated"].values()) and r["max_new_tokens"] > 0
    assert dash.ledger["components"]["optimizer_states"] > 0  # optimizer state appeared during the run
    assert len(tiny_session.events) == 0


def test_stop_from_the_dashboard_ends_a_real_run_at_a_step_boundary(tiny_session, write_jsonl, tmp_path):
    data = write_jsonl(ROWS)
    dash = TrainingDashboard.for_session(tiny_session)
    # the click, as the front-end delivers it, arrives during step 2
    tiny_session.events.subscribe(
        lambda e: e["kind"] == "step" and e["step"] == 2 and dash._handle_custom_msg({"event": "stop"}, []))
    result = tiny_session.train(data=str(data), max_steps=50, batch_size=4, eval_steps=100, val_split=0.25,
                                n_probes=1, output_dir=str(tmp_path / "run"))
    assert result.interrupted and result.metrics["steps"] <= 3  # noticed at the next step end
    assert dash.status == "stopped" and dash.n_loss_points == result.metrics["steps"]


BROWSER_CELL = r'''
import math, time
from types import SimpleNamespace
from qlora_nb.events import EventBus
from qlora_nb.views.live import watch

class S:
    def __init__(self):
        self.events, self.config, self.stop_requested = EventBus(), SimpleNamespace(model="fake"), False
    def request_stop(self):
        self.stop_requested = True

s, N = S(), 2000
with watch(s):
    s.events.emit("train_begin", max_steps=N)
    for i in range(1, N + 1):
        time.sleep(0.1)
        s.events.emit("step", step=i, loss=2 * math.exp(-i / 40) + 0.3, learning_rate=2e-4, tokens_per_s=300.0,
                      epoch=i / 100, max_steps=N, eta_s=(N - i) * 0.1)
        if i % 10 == 0:
            s.events.emit("eval", step=i, eval_loss=2 * math.exp(-i / 40) + 0.4)
            s.events.emit("probe", step=i, prompt="2+2?", base="a number", adapted="4")
        s.events.emit("poll", step=i)
        if s.stop_requested:
            break
    s.events.emit("train_end", steps=i, interrupted=s.stop_requested)
'''

_DASH_STATE = """() => Array.from(document.querySelectorAll('[data-testid="qlora-dashboard"]')).map((d) => ({
  points: Number(d.querySelector('[data-testid="loss-points"]').getAttribute("data-count")),
  status: d.querySelector('[data-testid="train-status"]').getAttribute("data-status"),
  probes: d.querySelectorAll('[data-testid="probe-row"]').length,
  chart: Number(d.querySelector('[data-testid="loss-chart"]').getAttribute("data-points")),
  traces: d.querySelectorAll('[data-testid="loss-chart"] polyline').length }))"""


@pytest.mark.browser
@pytest.mark.slow
def test_dashboard_in_jupyterlab_grows_and_stops_live(tmp_path):
    """JupyterLab + headless Chromium: the card and its loss chart render, grow while the cell runs, and the
    Stop button ends the busy cell at once (a 200 s loop), all without a request leaving 127.0.0.1."""
    import time
    from pathlib import Path

    from browser_support import (
        all_done,
        chromium_available,
        chromium_page,
        first_error,
        jupyter_lab,
        notebook_state,
        open_notebook,
        run_command,
    )

    if not chromium_available():
        pytest.fail("no /usr/bin/chromium: run `make browser-deps` (apt-get install chromium)")
    root = Path(__file__).resolve().parent.parent
    src = tmp_path / "nb"
    src.mkdir()
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": BROWSER_CELL, "outputs": [],
                     "execution_count": None}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (src / "dash.ipynb").write_text(json.dumps(nb))
    (tmp_path / "work").mkdir()
    with jupyter_lab(src, tmp_path / "work", env={"PYTHONPATH": str(root)}) as server, \
            chromium_page(tmp_path) as (page, requests):
        open_notebook(page, server, "dash.ipynb")
        run_command(page, "notebook:run-all-cells")
        seen, deadline = [], time.monotonic() + 120
        while len({d["points"] for d in seen if d["status"] == "running" and d["points"] >= 10}) < 2:
            assert time.monotonic() < deadline, f"the dashboard never showed progress: {seen[-5:]}"
            assert first_error(notebook_state(page)) is None, first_error(notebook_state(page))
            state = page.evaluate(_DASH_STATE)
            if state:
                seen.append(state[0])
            page.wait_for_timeout(250)
        growing = [d["points"] for d in seen if d["status"] == "running"]
        assert seen[-1]["traces"] == 3 and seen[-1]["probes"] == 1 and seen[-1]["chart"] >= 10
        page.locator('[data-testid="stop-button"]').first.click()
        clicked = time.monotonic()
        while not all_done(notebook_state(page)):
            assert time.monotonic() - clicked < 30, "the cell did not end after Stop"
            page.wait_for_timeout(200)
        final = page.evaluate(_DASH_STATE)[0]
        assert final["status"] == "stopped" and growing[-1] <= final["points"] < 2000, final
        assert requests.external() == []


def test_a_widget_is_shown_as_a_saved_fallback_then_the_live_view(monkeypatch):
    """In a kernel: two outputs (HTML fallback with the swap CSS, then the widget view); a display-id update
    from the same cell refreshes the fallback in place; a later cell gets a new pair."""
    import IPython.display

    from qlora_nb.views import base

    published = []
    monkeypatch.setattr(IPython.display, "publish_display_data",
                        lambda data, metadata=None, **kw: published.append((data, kw)))
    monkeypatch.setattr(base, "widget_frontend", lambda: True)
    count = {"n": 7}
    monkeypatch.setattr(base, "_execution_count", lambda: count["n"])
    s = FakeSession()
    dash = TrainingDashboard.for_session(s)
    dash._ipython_display_()
    (fallback, kw1), (view, kw2) = published
    assert "qn-fallback" in fallback["text/html"] and ".qn-live" in fallback["text/html"]
    assert fallback["text/plain"] == "training tiny: waiting"
    assert view["application/vnd.jupyter.widget-view+json"]["model_id"] == dash.model_id and view["text/plain"] == ""
    assert kw1["transient"]["display_id"] != kw2["transient"]["display_id"]
    step(s.events, 1, n=2)
    s.events.emit("train_end", step=1)  # the dashboard refreshes its saved fallback at the end
    data, kw = published[-1]
    assert kw == {"transient": kw1["transient"], "update": True} and "done" in data["text/plain"]
    assert 'data-points="1"' in data["text/html"]
    dash._ipython_display_()  # handle.update(widget) from the same cell: an update, not a second view
    assert published[-1][1].get("update") is True and len(published) == 4
    count["n"] = 8
    dash._ipython_display_()  # shown again from another cell: a new pair of outputs
    assert len(published) == 6 and "update" not in published[-1][1]


def test_breakdown_is_a_snapshot_unless_live():
    """%qlora_load's breakdown says "as of …" and ignores later ledger events; a subscribed one says "live"."""
    from qlora_nb.memory.ledger import COMPONENTS, Ledger
    from qlora_nb.views.breakdown import BreakdownWidget

    s = FakeSession()
    s.config = SimpleNamespace(model="tiny", bits=4, quant="nf4", double_quant=True, r=4, alpha=8,
                               targets=["all-linear"])
    s.ledger = lambda: Ledger(dict.fromkeys(COMPONENTS, 1), {"total": 10, "trainable": 2, "quantized": 8})
    snap = BreakdownWidget.for_session(s)
    assert snap.as_of.startswith("as of ") and snap.as_of.endswith("(load)") and len(s.events) == 0
    s.events.emit("ledger", ledger={**snap.ledger, "components": dict.fromkeys(COMPONENTS, 99)})
    assert snap.ledger["components"]["adapters"] == 1  # not rewritten by training-time numbers
    assert snap.text().startswith(f"tiny · 4-bit NF4 + DQ ({snap.as_of})")
    live = BreakdownWidget.for_session(s, subscribe=True)
    s.events.emit("ledger", ledger={**live.ledger, "components": dict.fromkeys(COMPONENTS, 99)})
    assert live.as_of == "live" and live.ledger["components"]["adapters"] == 99


def test_probe_outputs_are_flagged_truncated_only_when_cut_at_max_new_tokens(tiny_session):
    """`truncated` is True exactly when generation ran max_new_tokens without reaching EOS."""
    from qlora_nb.engine.training.probes import generate_probes

    s, tok = tiny_session, tiny_session.tokenizer
    prompts = ["Hello there", "2+2="]
    texts, cut = generate_probes(s, prompts, 4)
    assert cut == [True, True] and all(texts)  # the random model never says <|im_end|> in 4 tokens
    first = generate_probes(s, prompts[:1], 1)[0][0]
    old = tok.eos_token
    try:
        tok.eos_token = tok.convert_ids_to_tokens(tok(first, add_special_tokens=False)["input_ids"][0])
        texts, cut = generate_probes(s, prompts[:1], 4)  # EOS is now the first greedy token: stops at once
        assert cut == [False] and texts == [first]  # one token, then EOS (kept: not a special token)
    finally:
        tok.eos_token = old


def test_text_progress_marks_a_cut_probe():
    s, out = FakeSession(), io.StringIO()
    TextProgress.for_session(s, stream=out)
    s.events.emit("probe", step=2, prompt="2+2=", adapted="4 and then", truncated={"adapted": True}, max_new_tokens=8)
    s.events.emit("probe", step=2, prompt="3+3=", adapted="6", truncated={"adapted": False}, max_new_tokens=8)
    lines = out.getvalue().splitlines()
    assert lines[-2].endswith("… (cut at 8 tokens)") and "cut at" not in lines[-1]


def test_each_launched_rank_memory_is_synced_and_in_the_text():
    """%qlora_launch relays ``rank_memory`` events; the latest per rank is a synced trait and in the fallback."""
    dash = TrainingDashboard(min_interval=0.0)
    dash.on_event({"kind": "train_begin", "max_steps": 4})
    dash.on_event({"kind": "rank_memory", "rank": 1, "step": 1, "rss": 2 * 2**30})
    dash.on_event({"kind": "rank_memory", "rank": 0, "step": 1, "rss": 1 * 2**30, "gpu_peak": 3 * 2**30})
    dash.on_event({"kind": "rank_memory", "rank": 1, "step": 2, "rss": 5 * 2**29})
    dash.flush()
    assert dash.ranks == [{"rank": 0, "rss": 2**30, "gpu_peak": 3 * 2**30}, {"rank": 1, "rss": 5 * 2**29}]
    assert "rank 0 RSS 1.0 GiB (GPU peak 3.0 GiB), rank 1 RSS 2.5 GiB" in dash.text()
    assert "rank" not in TrainingDashboard(min_interval=0.0).text()
