"""Memory sizes in and out: ``'24GB'`` -> bytes, bytes -> ``'1.5 GiB'``.

The lowest layer, so options (``PlanConfig.gpu``), the planner, the ledger and
the engine's messages all parse and print sizes the same way.
"""

from __future__ import annotations

import math
import re
from typing import Any

from .errors import QloraError

_UNITS = {"": 2**30, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}


def parse_memory(value: Any, where: str = "plan option 'gpu'") -> int:
    """'24GB', '80GiB', '512 MB', 24 -> bytes. GB counts like GiB: GPU makers' '24GB' is 24 GiB."""
    if isinstance(value, bool):
        raise QloraError(f"{value!r} is not a memory size.", where=where, hint="Write e.g. 24GB or 80GiB.")
    if isinstance(value, (int, float)):
        num, unit = float(value), ""
    else:
        m = re.fullmatch(r"\s*([-+]?\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
        if not m or m.group(2).lower() not in _UNITS:
            raise QloraError(f"{value!r} is not a memory size.", where=where, hint="Write e.g. 24GB, 80GiB or 512MB.")
        num, unit = float(m.group(1)), m.group(2).lower()
    if not math.isfinite(num) or num <= 0:
        raise QloraError(f"{value!r} must be more than zero.", where=where, hint="Write e.g. 24GB.")
    return int(num * _UNITS[unit])


def human_bytes(n: float, floor: str = "B") -> str:
    """Bytes in binary units (KiB, MiB, GiB…), one decimal above bytes.

    ``floor="MiB"`` never goes below MiB (``0.038 MiB``), so a cell that prints
    several sizes (a merge, a save) reads them all in one unit system instead of
    mixing ``19139 KiB`` with ``1.2 GiB``.
    """
    n = float(n)
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    start = units.index(floor)
    n /= 1024**start
    for unit in units[start:]:
        if abs(n) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{n:.0f} B"
            return f"{n:.2g} {unit}" if 0 < abs(n) < 1 else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
