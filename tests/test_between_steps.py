"""A playground or chat click during training: "waiting for training (step n/N)", then answered at the next step.

The kernel routes the widget's messages to a subshell while the session trains (between_steps.py); here the
handler is called from inside the run, where a subshell thread would call it. The run must end exactly as it
would have without the click: the request runs with the RNG forked and the model's flags restored.
"""

from __future__ import annotations

import pytest
from test_train import FAST, ROWS

import qlora_nb


def _session(tiny_model_dir):
    return qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.1)  # dropout: the RNG matters


def _lora(session):
    return {n: p.detach().clone() for n, p in session.model.named_parameters() if "lora_" in n}


def _train(session, tmp_path, name, on_event=None):
    unsubscribe = session.events.subscribe(on_event) if on_event else None
    try:
        return session.train(data=ROWS, max_steps=5, val_split=0, seed=3, output_dir=str(tmp_path / name), **FAST)
    finally:
        if unsubscribe:
            unsubscribe()


@pytest.mark.parametrize("kind", ["playground", "chat"])
def test_a_click_during_training_waits_then_runs_at_the_next_step_and_changes_nothing(tiny_model_dir, tmp_path,
                                                                                      kind):
    from qlora_nb.views.chat import Chat
    from qlora_nb.views.playground import Playground

    plain = _session(tiny_model_dir)
    _train(plain, tmp_path, "plain")

    session = _session(tiny_model_dir)
    widget = Playground(session, prompt="Q: 2 plus 2\nA: ") if kind == "playground" else Chat(session)
    widget.options = {**widget.options, "max_new_tokens": 4}
    click = {"event": "generate", "prompt": "Q: 2 plus 2\nA: "} if kind == "playground" else \
        {"event": "send", "text": "2 plus 2?"}
    seen: list[tuple] = []

    def during(event):
        if event["kind"] == "poll" and event["step"] == 2 and not seen:
            widget._on_front_msg(widget, click, None)  # what the subshell thread does on the click
            seen.append(("clicked", widget.status, list(widget.notes)))
        elif event["kind"] in ("stream_begin", "chat_begin"):
            seen.append(("generated at", widget._watch.step))

    result = _train(session, tmp_path, "clicked", during)
    assert seen[0][1] == "waiting" and any(n.startswith("waiting for training (step 2/5)") for n in seen[0][2])
    assert seen[1] == ("generated at", 3)  # the next step boundary, not the end of the run
    assert widget.status == "done" and not widget.error
    assert not any(n.startswith("waiting for training") for n in widget.notes)
    assert (widget.columns if kind == "playground" else widget.turns and widget.columns)
    assert result.metrics["steps"] == 5 and not result.interrupted
    mine, theirs = _lora(session), _lora(plain)
    assert mine.keys() == theirs.keys() and all(mine[k].equal(theirs[k]) for k in mine)  # the run is unchanged
    assert widget._watch.training is False and widget._watch._unroute is None


def test_no_run_means_no_waiting(tiny_session):
    from qlora_nb.views.playground import Playground

    widget = Playground(tiny_session)
    assert widget._watch.defer({"event": "generate"}) is False and widget.status == "idle"


def test_a_resumed_run_shows_its_own_progress_time_and_checkpoint(tiny_model_dir, tmp_path):
    """Browser review: after a resume the panel read 'step 0/40' in warm-up, listed the old checkpoint at the end,
    and 'took' did not say it was only the resumed part."""
    import os
    import signal

    from qlora_nb.views.dashboard import TrainingDashboard

    opts = dict(data=ROWS, max_steps=6, val_split=0, seed=3, save_steps=100, **FAST)
    session = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0)

    def interrupt_at_3(event):
        if event["kind"] == "poll" and event["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    unsubscribe = session.events.subscribe(interrupt_at_3)
    part = session.train(output_dir=str(tmp_path / "r"), **opts)
    unsubscribe()
    assert part.checkpoint.name == "checkpoint-3"

    board = TrainingDashboard.for_session(session)
    begun = {}

    def at_begin(event):
        if event["kind"] == "train_begin":
            board.flush()
            begun.update(progress=dict(board.progress), phase=board.phase)

    unsubscribe = session.events.subscribe(at_begin)
    try:
        resumed = session.train(output_dir=str(tmp_path / "r"), resume=True, **opts)
    finally:
        unsubscribe()
    assert begun["progress"]["step"] == 3 and begun["progress"]["resumed_from"] == 3
    assert begun["phase"] == "resuming at step 3 (model warm-up)"
    assert resumed.metrics["steps"] == 6 and board.outputs["checkpoint"].endswith("checkpoint-6")  # this run's own, not the one it resumed from
    assert board.status == "done" and "took " in board.text() and "(steps 4–6)" in board.text()


def test_a_closed_widget_stops_following_the_session(tiny_session):
    from qlora_nb.views.chat import Chat
    from qlora_nb.views.playground import Playground

    for widget in (Playground(tiny_session), Chat(tiny_session)):
        before = len(tiny_session.events)
        widget.close()
        assert len(tiny_session.events) == before - 1


def test_a_widget_whose_init_failed_closes_quietly(tiny_session):
    from qlora_nb.errors import QloraError
    from qlora_nb.views.chat import Chat

    with pytest.raises(QloraError):
        Chat(tiny_session, mode="sideways")
    Chat.close(Chat.__new__(Chat))  # what __del__ does on the half-built object: no AttributeError
