"""Crash- and interrupt-safe file writes: write to a temporary name, then rename.

An interrupt while an adapter is being saved must leave the previous file or
the new one, never a torn one. ``os.replace`` is atomic on one filesystem.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import QloraError


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(target: str | Path, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


@contextlib.contextmanager
def atomic_dir(target: str | Path, *, overwrite: bool = False, kind: str = "folder", flag: str = "DIR",
               protected: Iterable[tuple[str | Path, str]] = ()) -> Iterator[Path]:
    """Build a folder under a temporary name and swap it in whole at the end.

    What may be replaced is decided by :func:`qlora_nb.overwrite.check_target`
    (only empty folders or folders this toolkit wrote, never a file, the
    notebook's folder or a ``protected`` one); the finished folder gets the
    toolkit's marker. The old folder is only removed after the new one is complete.
    """
    from .overwrite import check_target, check_writable, write_marker

    target = check_target(target, overwrite=overwrite, flag=flag, protected=protected)
    check_writable(target.parent, flag)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        raise QloraError(f"{str(target)!r} cannot be written ({exc.strerror or exc}).", where=flag,
                         hint="Choose a folder you can write to.") from None
    try:
        yield tmp
        write_marker(tmp, kind)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def path_kind(path: str | Path) -> str | None:
    """What ``path`` is when it is *not* a regular file (``None`` when it is one): for messages that say so.

    ``Path.is_file`` is False for a folder, a FIFO, a socket, a dangling link and a
    link loop alike; reporting them all as "missing" sent users looking for a file
    that was there (issue 25, class 7). A FIFO must never be opened: reading it blocks.
    """
    import stat

    p = Path(path).expanduser()
    try:
        mode = os.stat(p).st_mode
    except OSError as exc:
        if os.path.lexists(p):
            return "a symbolic link loop" if exc.errno == errno.ELOOP else "a link to something that does not exist"
        return "missing"
    except ValueError:  # an embedded NUL
        return "missing"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device file"
