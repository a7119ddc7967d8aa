"""Loading and training without library noise: progress bars and chatty warnings off, then back on."""

from __future__ import annotations


class quiet_libraries:
    """Silence progress bars and chatty warnings from transformers/bitsandbytes while loading.

    ``user_warnings_from`` names more modules whose User/DeprecationWarnings are dropped:
    saving and merging pass peft/transformers, whose save-time notes (embedding
    layers, deprecated flags) say nothing a notebook user can act on. Our own
    :class:`~qlora_nb.errors.QloraWarning` comes from ``qlora_nb`` and stays visible.
    """

    def __init__(self, user_warnings_from: tuple[str, ...] = ()) -> None:
        self._modules = ("bitsandbytes", *user_warnings_from)

    def __enter__(self):
        import logging
        import warnings

        self._warn = warnings.catch_warnings()
        self._warn.__enter__()
        warnings.filterwarnings("ignore", category=FutureWarning)
        for module in self._modules:
            for category in (UserWarning, DeprecationWarning):
                warnings.filterwarnings("ignore", category=category, module=module)
        self._levels = {}
        for name in ("transformers", "bitsandbytes", "peft", "accelerate"):
            lg = logging.getLogger(name)
            self._levels[name] = lg.level
            lg.setLevel(logging.ERROR)
        try:
            from transformers.utils import logging as tlog

            self._bar = tlog.is_progress_bar_enabled()
            tlog.disable_progress_bar()
        except Exception:
            self._bar = None
        return self

    def __exit__(self, *exc):
        import logging

        for name, lvl in self._levels.items():
            logging.getLogger(name).setLevel(lvl)
        if self._bar:
            from transformers.utils import logging as tlog

            tlog.enable_progress_bar()
        self._warn.__exit__(*exc)
        return False
