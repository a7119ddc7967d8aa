"""``--overwrite`` replaces only what this toolkit wrote (issue 15, class 2).

Every folder the toolkit writes (a saved adapter, a merged model, an exported
job, a training run's output_dir) gets a small marker file,
:data:`MARKER`. Replacing an existing folder is allowed only when it is empty
or carries that marker; a file is never replaced by a folder; the notebook's
own folder (``.``), its parents, the home folder and the session's base model
folder are never replaced at all. Every refusal lists what is there, so the
user sees what would have been lost.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from .errors import QloraError
from .naming import check_path_text

MARKER = "written_by_qlora_nb.json"
# Folders written before the marker existed: a toolkit file whose JSON holds the toolkit's key
# (a saved adapter, a run, a merged model), or the exported job's own pair of files.
LEGACY_MARKERS = {"qlora_nb.json": "format", "train_config.json": "train", "qlora_nb_merge.json": "merged_from"}
LEGACY_EXPORT = ("train.py", "accelerate_fsdp.yaml")


def write_marker(folder: str | Path, kind: str) -> None:
    """Mark ``folder`` as written by the toolkit (``kind``: adapter, merged model, export, run)."""
    from ._version import __version__

    (Path(folder) / MARKER).write_text(json.dumps({"kind": kind, "qlora_nb_version": __version__}) + "\n",
                                       encoding="utf-8")


def is_toolkit_folder(folder: str | Path) -> bool:
    """The folder holds the marker (or an older toolkit file whose JSON has the toolkit's key)."""
    folder = Path(folder)
    if (folder / MARKER).is_file():
        return True
    for name, key in LEGACY_MARKERS.items():
        try:
            if key in json.loads((folder / name).read_text(encoding="utf-8")):
                return True
        except (OSError, ValueError, TypeError):
            continue
    return all((folder / name).is_file() for name in LEGACY_EXPORT)


def describe_contents(folder: Path, limit: int = 6) -> str:
    """``todo.txt, data/, … (9 entries)``: what a refusal would have deleted."""
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        return f"(cannot list it: {exc.strerror or exc})"
    shown = [p.name + ("/" if p.is_dir() else "") for p in entries[:limit]]
    more = f", … ({len(entries)} entries)" if len(entries) > limit else ""
    return ", ".join(shown) + more


def _resolved(path: str | Path) -> Path:
    return Path(os.path.abspath(Path(path).expanduser()))


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_target(target: str | Path, *, overwrite: bool, flag: str = "DIR",
                 protected: Iterable[tuple[str | Path, str]] = ()) -> Path:
    """Raise unless writing a new folder at ``target`` loses nothing the toolkit did not write.

    ``protected``: (path, label) pairs that must survive, e.g. the session's
    base model folder; ``target`` may be neither one of them nor a folder
    containing one.
    """
    check_path_text(target, flag)  # a 300-character name is the user's to shorten, not an OSError
    path = Path(target).expanduser()
    full = _resolved(path)
    cwd = _resolved(Path.cwd())
    if _is_within(cwd, full) or full == _resolved(Path.home()) or full.parent == full:
        what = "the notebook's current folder" if full == cwd else "a folder that contains the notebook's folder" \
            if _is_within(cwd, full) else "your home folder" if full == _resolved(Path.home()) else "the root folder"
        raise QloraError(f"{str(target)!r} is {what} ({full}); the toolkit writes a whole new folder there and would "
                         "replace everything in it.", where=flag,
                         hint="Give a new sub-folder name, e.g. adapters/my-run.")
    for other, label in protected:
        other_full = _resolved(other)
        if _is_within(other_full, full):
            raise QloraError(f"{str(target)!r} is {label} ({other_full})" +
                             ("" if other_full == full else " or contains it") +
                             "; it is never overwritten.", where=flag, hint="Choose another folder.")
    if path.is_symlink() or path.exists() and not path.is_dir():
        kind = "a link" if path.is_symlink() else f"a file ({path.stat().st_size:,} bytes)"
        raise QloraError(f"{str(target)!r} is {kind}, not a folder; a file is never replaced by a folder, "
                         "with or without --overwrite.", where=flag,
                         hint="Choose a folder name that does not exist yet.")
    if not path.exists():
        return path
    try:
        empty = not any(path.iterdir())
    except OSError as exc:
        raise QloraError(f"{str(target)!r} cannot be read ({exc.strerror or exc}).", where=flag,
                         hint="Check the folder's permissions, or choose another folder.") from None
    if empty:
        return path
    contents = describe_contents(path)
    if not overwrite:
        raise QloraError(f"{str(target)!r} already exists and is not empty (it holds {contents}).", where=flag,
                         hint="Pass --overwrite (overwrite=True) to replace a folder qlora_nb wrote, or choose "
                              "another folder.")
    if not is_toolkit_folder(path):
        raise QloraError(f"{str(target)!r} holds files qlora_nb did not write ({contents}); --overwrite only "
                         f"replaces folders the toolkit wrote (they hold {MARKER}).", where=flag,
                         hint="Choose another folder, or move those files away first.")
    return path


def check_writable(folder: str | Path, flag: str) -> None:
    """The nearest existing parent of ``folder`` must be a writable folder (not a file)."""
    path = _resolved(check_path_text(folder, flag))
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise QloraError(f"{str(folder)!r} cannot be created: {probe} is a file, not a folder.", where=flag,
                         hint="Choose a folder path whose parents are folders.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise QloraError(f"{str(folder)!r} cannot be written: {probe} is not writable by this kernel's user.",
                         where=flag, hint="Choose a folder you can write to (e.g. under the notebook's folder).")
