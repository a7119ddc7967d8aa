"""Colab renders third-party widgets only after its custom widget manager is enabled: do it there, once.

Other widget libraries (geemap, for one) call ``google.colab.output.enable_custom_widget_manager()`` when they
detect Colab. We call it when the first qlora_nb widget is displayed, not at ``%load_ext``: detection reads
``sys.modules`` and the environment only, and ``google.colab`` is imported only where it already is (Colab
imports it at kernel start). Everywhere else this is a no-op that imports nothing.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("qlora_nb")

COLAB_ENV = ("COLAB_RELEASE_TAG", "COLAB_BACKEND_VERSION", "COLAB_GPU")  # set in Colab's runtime
_enabled = False


def in_colab() -> bool:
    """True inside a Colab runtime (its kernel module is loaded, or its environment variables are set)."""
    return "google.colab" in sys.modules or any(os.environ.get(name) for name in COLAB_ENV)


def enable_colab_widgets() -> bool:
    """Enable Colab's custom widget manager once per process; True when it was called (now or before)."""
    global _enabled
    if _enabled or not in_colab():
        return _enabled
    try:
        from google.colab import output  # type: ignore[import-not-found]

        output.enable_custom_widget_manager()
    except Exception as exc:  # not really Colab, or an older/newer Colab API: widgets fall back to text
        log.debug("qlora_nb: could not enable Colab's custom widget manager: %s", exc)
        return False
    _enabled = True
    return True
