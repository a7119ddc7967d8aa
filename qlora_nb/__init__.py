"""qlora_nb: LoRA and QLoRA fine-tuning from a Jupyter notebook.

``%load_ext qlora_nb`` registers the magics without importing torch,
transformers or plotly; those load when a magic (or a Python twin such as
:func:`load`) first needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import QloraError

__all__ = ["QloraError", "Session", "load", "plan", "playground", "runs", "runs_view", "studio", "__version__"]

if TYPE_CHECKING:
    from .engine.forecast.plan import plan
    from .engine.session import Session, load


def __getattr__(name: str) -> Any:  # PEP 562: heavy parts load on first use
    if name in ("load", "Session"):
        from .engine import session

        return getattr(session, name)
    if name == "plan":
        from .engine.forecast.plan import plan

        return plan
    raise AttributeError(f"module 'qlora_nb' has no attribute {name!r}")


def studio(session: Session, data: Any = None, **kwargs: Any):
    """The studio panel for ``session`` (Python twin of ``%qlora_studio``); display it, or call ``.train()``.

    A function here rather than ``Session.studio()``: the engine must not import its views (layering), and the
    package façade is the one place that sits above both.
    """
    from .views.studio import Studio

    return Studio(session, data=data, **kwargs)


def playground(session: Session, prompt: str = "", *, chat: bool | None = None, **kwargs: Any):
    """The playground for ``session`` (Python twin of ``%qlora_playground``).

    ``chat=True``: the multi-turn chat (``.send("...")``); ``chat=False``: single prompts (``.generate("...")``);
    None: chat when the tokenizer has a chat template and no plain prompt template was trained. A tokenizer
    without a chat template gets the chat widget in completion mode, with a note saying why. Chat keywords:
    ``history`` ("same" or "own"), ``system``, ``session_name`` (for "Copy as cell").
    """
    from .views.chat import make_playground

    return make_playground(session, prompt=prompt, chat=chat, **kwargs)


def runs(folder: str = "runs"):
    """The runs written under ``folder``, read from disk (Python twin of ``%qlora_runs``); no torch import.

    ``runs.compare("a", "b")`` lines two or more runs up, differences marked; ``runs["a"].history`` is the
    Trainer's ``log_history``. :func:`runs_view` shows them as a widget.
    """
    from .engine.training.runs import list_runs

    return list_runs(folder)


def runs_view(folder: str = "runs", session: Session | None = None, **kwargs: Any):
    """The run-history widget: overlay curves of selected runs, their configs side by side, load an adapter."""
    from .views.runs import RunsView

    return RunsView(runs(folder), session=session, **kwargs)


def load_ipython_extension(ipython) -> None:
    """``%load_ext qlora_nb``: register the magics and the one-paragraph error display."""
    from .magics import register

    register(ipython)


def unload_ipython_extension(ipython) -> None:
    """``%unload_ext qlora_nb``: remove the magics and the error display again."""
    from .magics import unregister

    unregister(ipython)
