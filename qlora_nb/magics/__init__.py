"""IPython magics: thin wrappers over the engine. Registered by ``%load_ext qlora_nb``."""

from __future__ import annotations

from ..errors import QloraError


def magic_classes() -> list[type]:
    from .compare import CompareMagics
    from .export import ExportMagics
    from .load import LoadMagics
    from .plan import PlanMagics
    from .train import TrainMagics

    return [LoadMagics, TrainMagics, CompareMagics, PlanMagics, ExportMagics]


def _show_qlora_error(shell, etype, value, tb, tb_offset=None):
    """Render a QloraError as one paragraph; the cell still counts as failed."""
    if getattr(value, "_qlora_debug", False):
        return shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset)
    return [f"{etype.__name__}: {value}"]


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
