"""Truncated or foreign weight files are named before a library fails on them (issue 15, class 7).

A truncated ``.safetensors`` (an interrupted download or copy) is found from
its own header: the header says where the last tensor ends, and the file must
be at least that long. A truncated or foreign ``.gguf`` fails ``gguf``'s own
reader. Both used to surface as a library error reported as "looks like a bug".
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from .errors import QloraError


def check_safetensors_file(file: Path, where: str = "MODEL") -> None:
    """Refuse a safetensors file that is shorter than its own header says, or has no valid header."""
    size = file.stat().st_size
    try:
        with open(file, "rb") as fh:
            head = fh.read(8)
            (n,) = struct.unpack("<Q", head) if len(head) == 8 else (None,)
            if n is None or n > size - 8:
                raise ValueError("the header is cut off")
            header = json.loads(fh.read(n))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError) as exc:
        raise QloraError(f"{file} is not a readable safetensors file ({exc}).", where=where,
                         hint="The file is damaged or truncated (an interrupted download or copy?): fetch or copy "
                              "it again.") from None
    if 8 + n + end > size:
        raise QloraError(f"{file} is truncated: its header describes {8 + n + end:,} bytes but the file has "
                         f"{size:,}.", where=where,
                         hint="An interrupted download or copy: fetch or copy the model again.")


def check_weight_files(folder: Path) -> None:
    for file in sorted(Path(folder).glob("*.safetensors")):
        check_safetensors_file(file)


def check_gguf_file(file: Path, where: str = "MODEL") -> None:
    """Refuse a file that is not GGUF, or whose tensors run past its end."""
    with open(file, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise QloraError(f"{file} is not a GGUF file (it starts with {magic!r}, not b'GGUF').", where=where,
                         hint="Pass a .gguf model file, or a Hugging Face model folder.")
    try:
        import gguf
    except ImportError:  # transformers reports a missing gguf package itself
        return
    try:
        gguf.GGUFReader(str(file))
    except Exception as exc:  # the reader raises ValueError/IndexError/struct.error on a cut file
        raise QloraError(f"{file} is truncated or damaged ({type(exc).__name__}: {str(exc)[:120]}).", where=where,
                         hint=f"Its size is {file.stat().st_size:,} bytes; download or copy it again.") from None
