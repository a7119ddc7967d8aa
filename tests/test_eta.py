"""The ETA counts the evals (and their probes) still to come, instead of spreading past evals over the steps."""

from __future__ import annotations

import time

from test_train import FAST, ROWS

import qlora_nb
from qlora_nb.engine.training.train_events import eta_seconds


def test_eta_by_hand():
    # 10 steps of 1 s done, plus 2 evals of 5 s (at steps 4 and 8); step 10 is logged before its eval runs
    assert eta_seconds(20.0, 10.0, 10, 10, 20, 0, 4) == 10 * 1.0 + 5.0 * 3  # evals at 12, 16, 20 are left
    assert eta_seconds(20.0, 10.0, 10, 10, 20, 0, 5) == 10 * 1.0 + 10.0 * 3  # one 10 s eval (5) ran; 10, 15, 20 left
    assert eta_seconds(20.0, 10.0, 10, 10, 20, 0, None) == 10.0  # no evaluation: steps only
    assert eta_seconds(3.0, 3.0, 3, 3, 20, 0, 4) == 17.0  # no eval finished yet: nothing to go by
    assert eta_seconds(20.0, 10.0, 10, 15, 25, 5, 4) == 10 * 1.0 + 5.0 * 3  # resumed at 5: evals 8, 12 ran


def test_a_slow_eval_is_in_the_eta_before_the_next_one(tiny_model_dir, tmp_path):
    session = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0)
    etas = {}

    def watch(event):
        if event["kind"] == "eval":
            time.sleep(0.6)  # a slow eval with probes, outside the steps' time
        elif event["kind"] == "step":
            etas[event["step"]] = event["eta_s"]

    unsubscribe = session.events.subscribe(watch)
    try:
        session.train(data=ROWS, max_steps=8, eval_steps=2, val_split=4, output_dir=str(tmp_path / "r"), **FAST)
    finally:
        unsubscribe()
    # at step 3 the eval at 2 has run: the evals at 4, 6 and 8 are counted (1.8 s); the old formula gave
    # (steps + 0.6 s) / 3 * 5, about 1 s plus the steps
    assert etas[3] >= 3 * 0.6, etas
