"""Front-ends other than JupyterLab: Colab's widget manager, kernels without subshells (ipykernel 6)."""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import pytest

from qlora_nb.views import kernel_comm


@pytest.fixture
def fake_colab(monkeypatch):
    """A stand-in ``google.colab`` package that records calls to enable_custom_widget_manager().

    anywidget enables Colab's widget manager itself (once per process, cached) when a widget is shown
    there; the cache is cleared so each test sees the first display.
    """
    from anywidget import _util

    calls: list[str] = []
    google = types.ModuleType("google")
    pkg = types.ModuleType("google.colab")
    output = types.ModuleType("google.colab.output")
    output.enable_custom_widget_manager = lambda: calls.append("enabled")
    output._widgets = SimpleNamespace(_installed_url=None)  # read by anywidget after enabling
    pkg.output = output
    google.colab = pkg
    for name, mod in (("google", google), ("google.colab", pkg), ("google.colab.output", output)):
        monkeypatch.setitem(sys.modules, name, mod)
    _util.enable_custom_widget_manager_once.cache_clear()
    yield calls
    _util.enable_custom_widget_manager_once.cache_clear()


def _display(widget):
    return widget._repr_mimebundle_()


def test_colab_widget_manager_enabled_once_at_first_display(fake_colab):
    from qlora_nb.views.dashboard import TrainingDashboard

    assert fake_colab == []  # importing the widgets did not call it
    data, _ = _display(TrainingDashboard(title="t"))
    assert fake_colab == ["enabled"] and "text/plain" in data
    _display(TrainingDashboard(title="again"))
    assert fake_colab == ["enabled"]


def test_not_colab_calls_nothing(monkeypatch):
    from qlora_nb.views.dashboard import TrainingDashboard

    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.delitem(sys.modules, "google.colab.output", raising=False)
    data, _ = _display(TrainingDashboard(title="t"))
    assert "text/plain" in data and "google.colab" not in sys.modules


def test_load_ext_does_not_touch_colab(fake_colab):
    import IPython.core.interactiveshell as ish

    import qlora_nb

    shell = ish.InteractiveShell.instance()
    qlora_nb.load_ipython_extension(shell)
    assert fake_colab == []


class _Comm:
    pass


class _Comm7(_Comm):
    def _reply_subshell_for(self, data, default):
        return default


def test_kernel_has_subshells(monkeypatch):
    import ipykernel.comm

    assert kernel_comm.kernel_has_subshells(None) is False  # no kernel (tests, terminal IPython)
    assert kernel_comm.kernel_has_subshells(SimpleNamespace()) is False  # ipykernel 6: no subshell support
    k7 = SimpleNamespace(_supports_kernel_subshells=True)
    monkeypatch.setattr(ipykernel.comm, "Comm", _Comm7)
    assert kernel_comm.kernel_has_subshells(k7) is True
    monkeypatch.setattr(ipykernel.comm, "Comm", _Comm)  # ipykernel 7.0-7.3: subshells, no comm routing hook
    assert kernel_comm.kernel_has_subshells(k7) is False


def test_dashboard_says_use_interrupt_on_a_kernel_without_subshells(monkeypatch):
    from qlora_nb.events import EventBus
    from qlora_nb.views import dashboard

    monkeypatch.setattr(kernel_comm, "current_kernel", lambda: SimpleNamespace())  # an ipykernel 6 kernel
    session = SimpleNamespace(events=EventBus(), config=SimpleNamespace(model="m"), request_stop=lambda: None)
    w = dashboard.TrainingDashboard.for_session(session)
    assert w.stop_live is False
    assert "use Interrupt (■ in the toolbar / Kernel → Interrupt)" in w.message
    w.detach()
