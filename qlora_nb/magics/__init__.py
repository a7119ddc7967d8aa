"""IPython magics: thin wrappers over the engine. Registered by ``%load_ext qlora_nb``."""

from __future__ import annotations

from ..errors import QloraError


def magic_classes() -> list[type]:
    from .compare import CompareMagics
    from .export import ExportMagics
    from .launch import LaunchMagics
    from .load import LoadMagics
    from .plan import PlanMagics
    from .runs import RunsMagics
    from .train import TrainMagics
    from .workbench import WorkbenchMagics

    return [LoadMagics, TrainMagics, CompareMagics, PlanMagics, ExportMagics, WorkbenchMagics, LaunchMagics,
            RunsMagics]


def _show_qlora_error(shell, etype, value, tb, tb_offset=None):
    """Show a QloraError as one paragraph (full traceback with ``--debug``); the cell still counts as failed.

    IPython ignores what a custom handler returns (``run_code`` only calls it),
    so the handler shows the text itself through ``_showtraceback``: a plain
    print in a terminal, an ``error`` message (ename/evalue) in a kernel.
    """
    import os

    if getattr(value, "_qlora_debug", False) or os.environ.get("QLORA_NB_DEBUG", "").lower() in ("1", "true", "yes"):
        stb = shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset)
    else:
        stb = [f"{etype.__name__}: {value}"]
    shell._showtraceback(etype, value, stb)
    return stb


def register(shell) -> None:
    for cls in magic_classes():
        shell.register_magics(cls)
    shell.set_custom_exc((QloraError,), _show_qlora_error)


def unregister(shell) -> None:
    mm = shell.magics_manager
    names = set()
    for cls in magic_classes():
        for kind in ("line", "cell"):
            names.update(cls.magics.get(kind, {}))
    for kind in ("line", "cell"):
        for name in list(mm.magics[kind]):
            if name in names:
                del mm.magics[kind][name]
    if getattr(shell, "custom_exceptions", ()) == (QloraError,):
        shell.set_custom_exc((), None)
