"""Every widget's Python twin after ``%qlora_unload``: each public method either needs the session and says so with
the widget's one paragraph (the same its buttons show), or is declared session-free and still works.

Found by introspection over every widget class in ``qlora_nb.views``, so a method added later must choose.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from test_runs_history_input import make_run
from test_workbench import _studio

import qlora_nb
import qlora_nb.views
from qlora_nb.errors import QloraError
from qlora_nb.views.base import QloraWidget
from qlora_nb.views.live import detach_widgets
from qlora_nb.views.session_guard import needs_session

ARGS = {"generate": ("Hello",), "send": ("Hello",), "edit": (0, "Hello"), "load_adapter": ("r",)}


def widget_classes() -> list[type]:
    for mod in pkgutil.iter_modules(qlora_nb.views.__path__):
        importlib.import_module(f"qlora_nb.views.{mod.name}")
    found, todo = set(), [QloraWidget]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub.__module__.startswith("qlora_nb.views") and sub not in found:
                found.add(sub)
                todo.append(sub)
    return sorted(found, key=lambda c: c.__name__)


def public_methods(cls: type) -> list[str]:
    """Public functions, classmethods and staticmethods the toolkit's own classes define for ``cls``."""
    names = set()
    for klass in cls.__mro__:
        if not (klass.__module__.startswith("qlora_nb.") or klass is cls):  # not anywidget's or traitlets'
            continue
        for name, value in vars(klass).items():
            if not name.startswith("_") and isinstance(value, (classmethod, staticmethod)) or (
                    not name.startswith("_") and inspect.isfunction(value)):
                names.add(name)
    return sorted(names)


def session_free(cls: type) -> set[str]:
    return {n for klass in cls.__mro__ for n in vars(klass).get("SESSION_FREE", ())}


def unclassified(cls: type) -> list[str]:
    """Methods neither guarded nor declared session-free, or both."""
    free = session_free(cls)
    return [n for n in public_methods(cls)
            if bool(getattr(getattr(cls, n), "needs_session", False)) == (n in free)]


def guarded(cls: type) -> list[str]:
    return [n for n in public_methods(cls) if getattr(getattr(cls, n), "needs_session", False)]


def test_the_introspection_finds_every_widget():
    names = {c.__name__ for c in widget_classes()}
    assert {"Playground", "Chat", "Studio", "RunsView", "TrainingDashboard", "CompareWidget", "PlannerWidget",
            "BreakdownWidget"} <= names


@pytest.mark.parametrize("cls", widget_classes(), ids=lambda c: c.__name__)
def test_every_public_method_needs_the_session_or_is_declared_free_of_it(cls):
    assert unclassified(cls) == [], f"{cls.__name__}: mark with @needs_session or list in SESSION_FREE"
    if guarded(cls):
        assert isinstance(cls.UNLOADED, str) and "%qlora_load" in cls.UNLOADED


def test_the_check_fails_for_a_method_that_did_not_choose():
    class Forgetful(QloraWidget):
        SESSION_FREE = ("shown",)
        UNLOADED = "forgetful: unloaded. Load one with %qlora_load."

        def shown(self):
            return 1

        def generate(self):  # neither marked nor listed
            return 2

        @needs_session
        def listed_and_marked(self):
            return 3

    Forgetful.SESSION_FREE = ("shown", "listed_and_marked")
    assert unclassified(Forgetful) == ["generate", "listed_and_marked"]


# ------------------------------------------------------------------ behaviour
def _widgets(session, tmp_path):
    from qlora_nb.engine.training.runs import list_runs
    from qlora_nb.views.chat import Chat
    from qlora_nb.views.playground import Playground
    from qlora_nb.views.runs import RunsView

    make_run(tmp_path / "runs", "r")
    return [Playground(session), Chat(session), _studio(session, data="rows"),
            RunsView(list_runs(tmp_path / "runs"), session=session)]


def _shown(widget) -> str:
    return widget.error if widget.has_trait("error") else widget.message


@pytest.mark.parametrize("gone", ["unloaded", "detached"])
def test_every_guarded_method_after_unload_raises_the_widgets_own_paragraph(tiny_model_dir, tmp_path, gone):
    session = qlora_nb.load(str(tiny_model_dir), bits=16, r=4)
    widgets = _widgets(session, tmp_path)
    session.unload()
    if gone == "detached":  # what %qlora_unload does to displayed widgets: their reference to the session goes
        assert detach_widgets({id(session)}) >= len(widgets)
        assert all(w.session is None for w in widgets)
    covered = set()
    for widget in widgets:
        cls = type(widget)
        for name in guarded(cls):
            if widget.has_trait("error"):
                widget.error = ""
            with pytest.raises(QloraError) as info:
                getattr(widget, name)(*ARGS.get(name, ()))
            assert str(info.value) == cls.UNLOADED, (cls.__name__, name)
            assert _shown(widget) == cls.UNLOADED, (cls.__name__, name)
            if widget.has_trait("status"):
                assert widget.status == "error"
            covered.add((cls.__name__, name))
        for name in session_free(cls) & set(public_methods(cls)):
            method = getattr(widget, name)
            required = [p for p in inspect.signature(method).parameters.values()
                        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            if not required:
                try:
                    method()
                except QloraError:
                    pass  # a refusal in one paragraph is fine; any other exception fails the test
    assert {("Playground", "generate"), ("Chat", "send"), ("Studio", "train"), ("RunsView", "load_adapter")} <= covered


def test_a_click_and_its_python_twin_give_the_same_paragraph(tiny_model_dir, tmp_path):
    session = qlora_nb.load(str(tiny_model_dir), bits=16, r=4)
    widgets = _widgets(session, tmp_path)
    session.unload()
    detach_widgets({id(session)})
    clicks = {"Playground": {"event": "generate", "prompt": "Hello"}, "Chat": {"event": "send", "text": "Hello"},
              "Studio": {"event": "train"}, "RunsView": {"event": "load", "name": "r"}}
    for widget in widgets:
        if type(widget).__name__ != "Chat":  # Chat.send is its own "send a message"; the others' is the comm's
            widget.send = lambda *_a, **_k: None  # no front end here
        widget._on_front_msg(widget, clicks[type(widget).__name__], [])  # nothing may escape a comm handler
        assert _shown(widget) == type(widget).UNLOADED, type(widget).__name__


def test_widgets_opened_on_an_unloaded_session_show_why(tiny_model_dir):
    from qlora_nb.views.chat import Chat
    from qlora_nb.views.playground import Playground

    session = qlora_nb.load(str(tiny_model_dir), bits=16, r=4)
    session.unload()
    for cls in (Playground, Chat):
        widget = cls(session)
        assert widget.status == "error" and widget.error == cls.UNLOADED and widget.available == []
    studio = _studio(session, data="rows")
    assert studio.error == type(studio).UNLOADED
