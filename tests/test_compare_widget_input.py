"""Issue 15, class 10 (the compare widget; the data items are in test_malformed_data.py)."""

from __future__ import annotations

import pytest

from qlora_nb.errors import QloraError


class _FakeWidget:
    def __init__(self, rows=()):
        self.rows, self.status, self.closed, self._unsubscribe = list(rows), "waiting", False, None

    def close(self):
        self.closed = True


class _FakeHandle:
    def __init__(self):
        self.updates = []

    def update(self, obj, **kw):
        self.updates.append((obj, kw))


@pytest.mark.parametrize("exc,rows,withdrawn", [
    (QloraError("prompt too long"), [], True),
    (RuntimeError("deep"), [], True),
    (KeyboardInterrupt(), [], True),  # nothing streamed yet: nothing to keep
    (KeyboardInterrupt(), [{"prompt": "p"}], False),  # what streamed stays, marked stopped
    (QloraError("x"), [{"prompt": "p"}], True),
])
def test_a_failed_compare_leaves_no_empty_widget(exc, rows, withdrawn):
    from qlora_nb.magics.compare import _withdraw

    widget, handle = _FakeWidget(rows), _FakeHandle()
    _withdraw(widget, handle, exc)
    assert widget.closed == withdrawn
    assert (handle.updates == [({"text/plain": ""}, {"raw": True})]) == withdrawn
    assert widget.status == ("waiting" if withdrawn else "stopped")


def test_failed_compare_in_a_kernel_withdraws_its_widget(tiny_session, monkeypatch):
    from IPython.testing import globalipapp
    from test_bad_input import check_one_paragraph, run_cell

    from qlora_nb.magics.compare import CompareMagics

    ip = globalipapp.start_ipython() or globalipapp.get_ipython()
    ip.run_line_magic("load_ext", "qlora_nb")
    ip.user_ns["qlora"] = tiny_session
    made = []

    def fake_widget(self, session):
        made.append(_FakeWidget())
        return made[-1]

    monkeypatch.setattr(CompareMagics, "_widget", fake_widget)
    monkeypatch.setattr(ip, "kernel", object(), raising=False)  # as inside a Jupyter kernel
    try:
        result, out = run_cell(ip, '%qlora_compare "' + "x" * 600 + '"')
        check_one_paragraph(out, ["tokens"])
        assert made and made[0].closed
    finally:
        ip.run_line_magic("unload_ext", "qlora_nb")
        ip.user_ns.pop("qlora", None)
