"""Library noise and the hub's offline switch, in the lowest layer so data, memory and engine share them.

:class:`quiet_libraries` silences progress bars and chatty warnings around a
library call; :func:`hub_offline` is the one rule for "may we download".
"""

from __future__ import annotations

import os

_TRUE = ("1", "true", "yes", "on")
# The hub libraries' retry and connection chatter: a hub failure becomes one QloraError that says it all.
_HUB_LOGGERS = ("datasets", "huggingface_hub", "urllib3", "fsspec", "filelock")


def hub_offline(*, datasets: bool = False) -> bool:
    """True when downloads are switched off: ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` (which transformers
    treats as the same switch), plus ``HF_DATASETS_OFFLINE`` for ``datasets=True``.

    Read from the environment at each call (huggingface_hub reads it once, at import), with
    huggingface_hub's spellings of true, so setting it in a running notebook takes effect.
    """
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") + (("HF_DATASETS_OFFLINE",) if datasets else ())
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in names)


class quiet_libraries:
    """Silence progress bars and chatty warnings from transformers/bitsandbytes while loading.

    ``user_warnings_from`` names more modules whose User/DeprecationWarnings are dropped:
    saving and merging pass peft/transformers, whose save-time notes (embedding
    layers, deprecated flags) say nothing a notebook user can act on. Our own
    :class:`~qlora_nb.errors.QloraWarning` comes from ``qlora_nb`` and stays visible.

    ``hub=True`` is for downloads (hub datasets, configs): the hub libraries' loggers go quiet and every
    warning is dropped, because their retry and connection warnings would print a page before the one
    QloraError that explains the failure; transformers' progress bar is left alone (and not imported).
    """

    def __init__(self, user_warnings_from: tuple[str, ...] = (), *, hub: bool = False) -> None:
        self._modules = ("bitsandbytes", *user_warnings_from)
        self._hub = hub

    def __enter__(self):
        import logging
        import warnings

        self._warn = warnings.catch_warnings()
        self._warn.__enter__()
        if self._hub:
            warnings.simplefilter("ignore")
        warnings.filterwarnings("ignore", category=FutureWarning)
        for module in self._modules:
            for category in (UserWarning, DeprecationWarning):
                warnings.filterwarnings("ignore", category=category, module=module)
        names = ("transformers", "bitsandbytes", "peft", "accelerate") + (_HUB_LOGGERS if self._hub else ())
        self._levels = {}
        for name in names:
            lg = logging.getLogger(name)
            self._levels[name] = lg.level
            lg.setLevel(logging.ERROR)
        self._bar = None
        if not self._hub:
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
