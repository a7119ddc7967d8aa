"""An exported GGUF as one more column of compare, the playground and chat.

The verdict line of an export gives numbers; a user also wants to *see* the
file answer like the adapter before shipping it. ``--gguf FILE`` loads the
file back with transformers (the same reader the verification uses, so what
is shown is what a user of the file gets) and keeps it beside the session as
the column ``gguf``; every generation path asks :func:`model_for` which model
serves a column. One file is attached at a time: attaching another frees the
first, and ``%qlora_unload`` frees it with the session.

Why not by default: the re-loaded model is a second, unquantized copy (fp32,
4 bytes per parameter: 0.5 GiB for the 135M demo model, 28 GiB for a 7B), so
it is only held when asked for, and the cell says how much it holds.

The column uses the session's tokenizer for prompts and decoding, which is
only right when the file's tokenizer splits text the same way: that is checked
on attach (the export's own verification checks it too) and a file with
another vocabulary is refused rather than shown as garbage.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import QloraError

COLUMN = "gguf"
_PROBES = ["Hello there, how are you?", "def add(a, b):\n    return a + b", "Ünïcode 3 + 4 = 7 ✓"]


@dataclass
class Attached:
    """A GGUF loaded back beside the session: the file, when it was read, and the model."""

    column: str
    file: Path
    mtime: float
    model: Any
    nbytes: int
    engine: str = "transformers"

    def describe(self) -> str:
        if self.engine != "transformers":
            return (f"column {self.column!r}: {self.file} served by llama.cpp ({self.nbytes / 2**20:,.0f} MiB "
                    "file, memory-mapped, until %qlora_unload)")
        return (f"column {self.column!r}: {self.file} loaded back with transformers "
                f"({self.nbytes / 2**20:,.0f} MiB in memory until %qlora_unload)")


def attached(session) -> dict[str, Attached]:
    return getattr(session, "attached", None) or {}


def model_for(session, column: str):
    """The model that generates ``column``: an attached GGUF's, else the session's."""
    entry = attached(session).get(column)
    return entry.model if entry is not None else session.model


def _resolve(path: Any) -> Path:
    file = Path(str(path)).expanduser()
    if file.is_dir():
        found = sorted(file.glob("*.gguf"))
        if len(found) != 1:
            raise QloraError(f"{file} holds {len(found)} .gguf files, so which one to show is not clear.",
                             where="--gguf", hint="Pass the .gguf file itself.")
        file = found[0]
    if not file.is_file():
        raise QloraError(f"no file at {file}.", where="--gguf",
                         hint="Pass the .gguf written by %qlora_merge DIR --format gguf (its path is in the verdict "
                              "line).")
    from ...weightfiles import check_gguf_file

    check_gguf_file(file, where="--gguf")
    return file


def attach_gguf(session, path: Any, engine: str = "transformers") -> Attached:
    """Load ``path`` (a .gguf, or a folder holding one) back and keep it as the ``gguf`` column.

    ``engine``: transformers (the default) or llama.cpp (:mod:`.llamacpp`) serves it.
    """
    from ..export.gguf_check import _same_ids, load_back
    from ..export.gguf_header import check_before_loading

    config = session.model.config  # first: an unloaded session's stand-in model raises its one paragraph here
    file = _resolve(path)
    column = COLUMN if COLUMN not in session.adapters else f"{COLUMN} file"
    current = attached(session).get(column)
    if current is not None and current.file == file.resolve() and current.mtime == file.stat().st_mtime \
            and current.engine == engine:
        return current
    # incomplete metadata, another model than the base, too big for the free memory: refused before loading
    # (llama.cpp maps the file instead of building an fp32 copy, so only transformers' load is sized)
    check_before_loading(file, config, freed=sum(e.nbytes for e in attached(session).values()),
                         sized=engine == "transformers")
    if engine != "transformers":
        return _attach_llamacpp(session, file, column)
    detach(session)
    model, tokenizer = _loaded(lambda: load_back(file.parent, file.name), file, "transformers",
                               "or a model transformers can read from GGUF.")
    if len(tokenizer) != len(session.tokenizer) or not _same_ids(session.tokenizer, tokenizer, _PROBES):
        del model
        gc.collect()
        raise QloraError(f"{file}'s tokenizer splits text differently from this session's ({len(tokenizer):,} vs "
                         f"{len(session.tokenizer):,} tokens), so its column cannot be shown beside the others.",
                         where="--gguf", hint="Attach a GGUF exported from this session's model.")
    model.to(session.device)
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return _keep(session, Attached(column, file.resolve(), file.stat().st_mtime, model, nbytes))


def _loaded(load: Any, file: Path, program: str, alternative: str) -> Any:
    """``load()``, any failure to read the file reported as one paragraph naming the program."""
    try:
        return load()
    except QloraError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to read the file is reported as that
        raise QloraError(f"{program} could not load {file} ({type(exc).__name__}: {str(exc)[:200]}).",
                         where="--gguf", hint=f"Pass a GGUF written by %qlora_merge --format gguf, {alternative}"
                         ) from None


def _keep(session, entry: Attached) -> Attached:
    if not hasattr(session, "attached"):
        session.attached = {}
    session.attached[entry.column] = entry
    return entry


def _attach_llamacpp(session, file: Path, column: str) -> Attached:
    """The file served by llama.cpp; refused like the transformers path when it splits text differently."""
    from .llamacpp import LlamaCppModel, same_ids

    detach(session)
    model = _loaded(lambda: LlamaCppModel(file), file, "llama.cpp",
                    "or leave --engine out to load it with transformers.")
    if not same_ids(model, session.tokenizer, _PROBES):
        model.close()
        raise QloraError(f"llama.cpp splits text differently from this session's tokenizer when it reads {file}, "
                         "so its column cannot be shown beside the others.", where="--gguf",
                         hint="Attach a GGUF exported from this session's model.")
    return _keep(session, Attached(column, file.resolve(), file.stat().st_mtime, model, model.nbytes, "llama.cpp"))


def detach(session) -> int:
    """Free every attached GGUF; the bytes released."""
    entries = attached(session)
    freed = sum(e.nbytes for e in entries.values())
    if entries:
        for entry in entries.values():
            getattr(entry.model, "close", lambda: None)()  # llama.cpp frees its context now, not at GC
        entries.clear()
        gc.collect()
    return freed
