"""Names the user gives that become module keys or folder names: adapter names, run names, path parts.

One place decides what a name may hold (issue 25, classes 5 and 6, minor), so the
refusal is a QloraError naming the option instead of peft's ``KeyError`` on a dot
or the file system's ``File name too long``, and nothing is silently renamed.

* An adapter name is a key in peft's module dicts (no ``.``), a sub-folder name when
  saved (no ``/``, ``\\``, control characters) and a column label next to ``base``,
  which is therefore reserved.
* A run name is one folder under ``runs/``: never ``..``, a separator or a newline.
* Every part of a path the toolkit creates must fit the file system's name limit.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

from .errors import QloraError

RESERVED_ADAPTER_NAMES = ("base", "__base__")  # the base model's column; peft's name for "no adapter" in a batch
NAME_MAX_BYTES = 255  # ext4, xfs, btrfs, APFS and NTFS all stop at 255 (bytes or UTF-16 units)


def _control(text: str) -> str | None:
    """The first control / line-separator character in ``text``, as U+XXXX, or None."""
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            return f"U+{ord(ch):04X}"
    return None


def name_max(folder: str | Path = ".") -> int:
    """The longest file name (in bytes) the file system holding ``folder`` accepts."""
    probe = Path(folder)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        return int(os.pathconf(probe, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # Windows has no pathconf
        return NAME_MAX_BYTES


def check_adapter_name(name: object, where: str) -> str:
    """``name`` unchanged when peft and the file system can both hold it; otherwise one clear error."""
    hint = "Use letters, digits, '_' or '-', e.g. v2 or my_adapter."
    if not isinstance(name, str) or not name.strip():
        got = repr(name) if isinstance(name, str) else type(name).__name__
        raise QloraError(f"an adapter name must be non-empty text, got {got}.", where=where, hint=hint)
    if name.strip().lower() in RESERVED_ADAPTER_NAMES:
        raise QloraError(f"{name!r} is reserved: it is the base model's column in the playground and in compare.",
                         where=where, hint="Choose another name, e.g. base_v2 or my_adapter.")
    bad = _control(name)
    if bad or any(c in name for c in "./\\") or name != name.strip():
        what = (f"a control or line-break character ({bad})" if bad else "a dot" if "." in name
                else "a path separator" if any(c in name for c in "/\\") else "leading or trailing spaces")
        raise QloraError(f"the adapter name {name!r} contains {what}; peft keys adapters by name in module "
                         "dicts and saves them in folders of that name.", where=where, hint=hint)
    if len(name.encode("utf-8")) > 64:
        raise QloraError(f"the adapter name is {len(name)} characters long.", where=where,
                         hint="Keep it under 64 characters; it labels a column and names a folder.")
    return name


def check_folder_name(name: str, where: str, folder: str | Path = ".") -> str:
    """``name`` as one new folder inside ``folder``: no separators, ``.``/``..``, control characters or overlength."""
    bad = _control(name)
    if not name.strip() or name in (".", "..") or any(c in name for c in "/\\") or bad:
        what = ("empty" if not name.strip() else f"{name!r}, which names a folder above or the same folder"
                if name in (".", "..") else f"{name!r}, which contains a control or line-break character ({bad})"
                if bad else f"{name!r}, which contains a path separator and would write outside its folder")
        raise QloraError(f"the name is {what}.", where=where,
                         hint="Use one folder name such as my-run; set output_dir for a folder elsewhere.")
    check_path_text(Path(folder) / name, where)
    return name


def check_path_text(path: str | Path, where: str) -> Path:
    """Every part of ``path`` must be a name the file system can hold (length, NUL, line breaks)."""
    text = str(path)
    if "\x00" in text or "\n" in text or "\r" in text:
        raise QloraError(f"the path {text!r} contains a NUL or line-break character.", where=where,
                         hint="Type the path without it.")
    p = Path(text).expanduser()
    limit = name_max(p.parent if p.parent != p else p)
    for part in p.parts:
        size = len(part.encode("utf-8", "surrogatepass"))
        if size > limit:
            raise QloraError(f"the name {part[:40]!r}… is {size} bytes long; this file system allows at most "
                             f"{limit} bytes per file or folder name.", where=where, hint="Choose a shorter name.")
    return p
