"""Magics for export (filled in by its issue)."""

from __future__ import annotations

from IPython.core.magic import magics_class

from .base import QloraMagicsBase


@magics_class
class ExportMagics(QloraMagicsBase):
    pass
