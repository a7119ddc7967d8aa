"""Base class for the toolkit's anywidgets: ES modules from the wheel, saved fallbacks, no CDN.

The front-end code lives in the top-level ``widgets/`` folder of the repo and is
shipped inside the wheel as ``qlora_nb/_static`` (see pyproject.toml), so a
plain ``pip install .``, Binder and offline users all render it.

In a kernel each widget is displayed as two outputs, a static HTML/text fallback
and the live view (see :data:`FALLBACK_STYLE`), so a notebook reopened without
its kernel shows the fallback instead of "Error displaying widget".
"""

from __future__ import annotations

import html
import re
import uuid
from pathlib import Path
from typing import Any

import anywidget


def static_dir() -> Path:
    """The folder holding the widgets' ``.js``/``.css`` (installed wheel first, then the repo)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_static", here.parent / "widgets"):
        if (candidate / "qlora.css").is_file():
            return candidate
    raise FileNotFoundError("qlora_nb widget assets not found (expected qlora_nb/_static or ../widgets)")


def asset(name: str) -> Path:
    return static_dir() / name


_IMPORT = re.compile(r"""^import\s*\{[^}]*\}\s*from\s*["']\./([\w.-]+\.js)["'];?\s*$""", re.M)
_ANY_IMPORT = re.compile(r"^[ \t]*import\b(?!\s*\()", re.M)  # a static import statement (not import())
_EXPORT_DEFAULT = re.compile(r"^[ \t]*export\s+default\b", re.M)


def esm(name: str) -> str:
    """The ES module ``name`` with its local ``./x.js`` imports inlined, as one module text.

    anywidget loads ``_esm`` from a string (a blob URL), where relative imports
    cannot resolve, and its documented answer for several files is a bundler.
    This is the small bundler the widgets need, without a JS toolchain in the
    build: each helper module is inlined once, in place of its import.

    Its limits, checked here and in ``tests/test_widget_js.py``:

    - the only import form is one line ``import { a, b } from "./helper.js";``
      of a file in the same folder, names used as the helper declares them (no
      ``as``); any other static import raises ValueError;
    - all inlined files share one module scope, so their top-level names must
      not collide (node rejects the module otherwise; the test parses every
      widget's module), and a helper may not ``export default``.
    """
    seen: set[str] = set()

    def expand(fname: str, root: bool) -> str:
        text = asset(fname).read_text(encoding="utf-8")
        if not root and _EXPORT_DEFAULT.search(text):
            raise ValueError(f"widgets/{fname}: a helper module inlined by esm() cannot 'export default' (it would "
                             "be the importing widget's default export).")
        for m in _ANY_IMPORT.finditer(text):
            line = text[m.start():].split("\n", 1)[0]
            if not _IMPORT.fullmatch(line.strip()) or re.search(r"\bas\b", line):  # `as` would need renaming
                lineno = text.count("\n", 0, m.start()) + 1
                raise ValueError(f"widgets/{fname}, line {lineno}: {line.strip()!r} is not an import esm() can "
                                 'inline; write it on one line as import {{ a, b }} from "./helper.js";')

        def sub(m: re.Match) -> str:
            dep = m.group(1)
            if dep in seen:
                return ""
            seen.add(dep)
            return expand(dep, False)

        return _IMPORT.sub(sub, text)

    return expand(name, True)


# ------------------------------------------------------------------ display with a saved fallback
# JupyterLab (default settings) does not save widget state, and its widget renderer shows
# "Error displaying widget: model not found" (fresh kernel) or "Loading widget..." (no kernel) for a
# widget-view output whose model is gone; it never falls back to another mime type of the same bundle
# (checked in jupyterlab-manager 3.0.x's WidgetRenderer). So a widget is shown as two outputs: a static
# HTML fallback, then the widget view. The style in the fallback swaps them with CSS alone, so it also
# works with no kernel: the fallback hides while the next output holds a live view (.qn-live) and the
# widget output hides while it holds none (loading, or the model is gone).
FALLBACK_STYLE = """<style>
.jp-OutputArea-child:has(.qn-fallback):has(+ .jp-OutputArea-child .qn-live) { display: none; }
.jp-OutputArea-child:has(.qn-fallback) + .jp-OutputArea-child:not(:has(.qn-live)) { display: none; }
.qn-fallback { font-family: var(--jp-ui-font-family, system-ui, sans-serif); font-size: 13px;
  color: var(--jp-ui-font-color1, inherit); }
.qn-fallback table { border-collapse: collapse; }
.qn-fallback td, .qn-fallback th { padding: 1px 8px; text-align: right;
  border-bottom: 1px solid var(--jp-border-color3, #eee); }
.qn-fallback td:first-child, .qn-fallback th:first-child { text-align: left; }
.qn-fallback pre { white-space: pre-wrap; margin: 0; }
.qn-fallback .qn-muted { color: var(--jp-ui-font-color2, #666); }
</style>"""


def fallback_html(title: str, body_html: str) -> str:
    """The saved stand-in for a widget: ``title`` and ``body_html`` in a ``.qn-fallback`` block."""
    head = f"<div class='qn-muted'>{html.escape(title)}</div>" if title else ""
    return f"{FALLBACK_STYLE}<div class='qn-fallback' data-testid='qlora-fallback'>{head}{body_html}</div>"


def text_as_html(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


class QloraWidget(anywidget.AnyWidget):
    """A widget that also renders where no widget front-end or no widget model exists.

    ``text()`` is the plain-text form (terminal, nbclient); ``fallback_body()`` the HTML saved in the
    notebook and shown when it is reopened without this kernel (see :data:`FALLBACK_STYLE`).
    """

    _fallback_id: str | None = None
    _view_id: str | None = None
    _shown_in: int | None = None  # the execution count of the cell that displayed it
    SETTLED = ("done", "stopped", "error")  # a ``status`` trait reaching one of these rewrites the saved fallback
    # Every public method either needs the session (marked @needs_session, views/session_guard.py) or is listed
    # here, per class; UNLOADED is the class's one paragraph once its session is gone (buttons and Python alike).
    SESSION_FREE: tuple[str, ...] = ("text", "fallback_title", "fallback_body", "fallback_bundle",
                                     "refresh_fallback", "clear_display")
    UNLOADED: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.has_trait("status"):  # the saved notebook keeps the last state, not the one first displayed
            self.observe(lambda change: change["new"] in self.SETTLED and self.refresh_fallback(), names="status")

    def text(self) -> str:
        return repr(self)

    def fallback_title(self) -> str:
        return ""

    def fallback_body(self) -> str:
        return text_as_html(self.text())

    def fallback_bundle(self) -> dict[str, str]:
        return {"text/html": fallback_html(self.fallback_title(), self.fallback_body()), "text/plain": self.text()}

    def _repr_mimebundle_(self, **kwargs: Any):
        # In Colab, anywidget's own _repr_mimebundle_ enables Colab's custom widget manager once
        # (tests/test_frontends.py checks it through our widgets), so no Colab code of our own.
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, tuple):
            data, meta = bundle
        else:
            data, meta = bundle, {}
        data = dict(data or {})
        data["text/plain"] = self.text()
        return data, meta

    def _ipython_display_(self) -> None:
        """In a kernel: the fallback output, then the widget view (each with a display id to update)."""
        from IPython.display import publish_display_data

        if not widget_frontend():
            publish_display_data({"text/plain": self.text()})
            return
        cell = _execution_count()
        if self._fallback_id is not None and cell == self._shown_in:
            # shown already by this cell: ``handle.update(widget)`` (a display id update, which IPython routes
            # here without its id) refreshes the saved fallback instead of adding a second pair of outputs
            self.refresh_fallback()
            return
        self._shown_in = cell
        self._fallback_id, self._view_id = uuid.uuid4().hex, uuid.uuid4().hex
        publish_display_data(self.fallback_bundle(), transient={"display_id": self._fallback_id})
        data, meta = self._view_bundle()
        publish_display_data(data, metadata=meta, transient={"display_id": self._view_id})

    def _view_bundle(self) -> tuple[dict, dict]:
        data, meta = self._repr_mimebundle_()
        # the text lives in the fallback output; an empty one here keeps untrusted front-ends quiet
        return {**data, "text/plain": ""}, meta

    def refresh_fallback(self) -> None:
        """Rewrite the saved fallback with the current state (e.g. the final loss curve at the end)."""
        if self._fallback_id is None:
            return
        from IPython.display import publish_display_data

        publish_display_data(self.fallback_bundle(), transient={"display_id": self._fallback_id}, update=True)

    def clear_display(self) -> None:
        """Empty both outputs (a view that should not stay, e.g. training that failed before it began)."""
        from IPython.display import publish_display_data

        for did in (self._fallback_id, self._view_id):
            if did is not None:
                publish_display_data({"text/plain": ""}, transient={"display_id": did}, update=True)


def _execution_count() -> int | None:
    from IPython import get_ipython

    shell = get_ipython()
    return getattr(shell, "execution_count", None)


def widget_frontend() -> bool:
    """True inside a Jupyter (ZMQ) kernel, where widgets are displayed; False in scripts and terminals."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"
