"""Base class for the toolkit's anywidgets: ES modules from the wheel, text fallback, no CDN.

The front-end code lives in the top-level ``widgets/`` folder of the repo and is
shipped inside the wheel as ``qlora_nb/_static`` (see pyproject.toml), so a
plain ``pip install .``, Binder and offline users all render it.
"""

from __future__ import annotations

import re
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


def esm(name: str) -> str:
    """The ES module ``name`` with its local ``./x.js`` imports inlined.

    anywidget loads a module from a string/blob, where relative imports cannot
    resolve; inlining keeps the sources as separate readable files without a
    bundler or a network fetch. Each helper module is inlined once.
    """
    seen: set[str] = set()

    def expand(fname: str) -> str:
        text = asset(fname).read_text(encoding="utf-8")

        def sub(m: re.Match) -> str:
            dep = m.group(1)
            if dep in seen:
                return ""
            seen.add(dep)
            return expand(dep)

        return _IMPORT.sub(sub, text)

    return expand(name)


class QloraWidget(anywidget.AnyWidget):
    """A widget that also renders as plain text where no widget front-end exists (terminal, nbclient)."""

    def text(self) -> str:
        return repr(self)

    def _repr_mimebundle_(self, **kwargs: Any):
        from .colab import enable_colab_widgets

        enable_colab_widgets()  # Colab only, once: before the first widget view is rendered there
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, tuple):
            data, meta = bundle
        else:
            data, meta = bundle, {}
        data = dict(data or {})
        data["text/plain"] = self.text()
        return data, meta
