"""The columns of a generation (base first, then adapters) and what each column's cell holds.

Pure list work over token ids, shared by every view of the one generation path
(:mod:`.stream`): compare's records, the playground's columns and the text forms.
"""

from __future__ import annotations

import difflib
from typing import Any

from ...errors import QloraError
from ..model.adapters import BASE, active_adapter, is_trained, no_adapter


def adapter_names(session) -> list[str]:
    """The session's adapters that are loaded in the model, the active one first, then session order."""
    names = [n for n in session.adapters if n in getattr(session.model, "peft_config", {})]
    active = active_adapter(session.model)
    return sorted(names, key=lambda n: n != active)


def offered_columns(session) -> list[str]:
    """What a widget offers to tick: the session's adapters loaded in the model, then attached GGUF files."""
    from .attached import attached

    return [*(n for n in session.adapters if n in getattr(session.model, "peft_config", {})), *attached(session)]


def choose_columns(session, requested: list[str], gguf: Any = None,
                   engine: str = "transformers") -> tuple[list[str], list[str]]:
    """``(columns, notes)``: base, the requested (default: all) adapters that are trained, then an attached GGUF.

    ``gguf``: a GGUF file to attach first (:mod:`.attached`, served by ``engine``); an attached file is shown when
    it is asked for, by this or by its column name, or when no column is named.
    """
    from .attached import attach_gguf, attached

    notes: list[str] = []
    if gguf is not None:
        notes.append(attach_gguf(session, gguf, engine).describe())
    files = attached(session)
    extra = [c for c in files if gguf is not None or not requested or c in requested]
    requested = [r for r in requested if r not in files]
    known = adapter_names(session)
    if requested:
        chosen = []
        for name in requested:
            if name == BASE:
                continue
            if name not in known:
                if name in session.adapters:
                    raise QloraError(f"adapter {name!r} is listed in the session but not loaded in the model.",
                                     where="--adapters", hint="Load it again with %qlora_load_adapter.")
                raise no_adapter(name, known, "--adapters")
            if name not in chosen:
                chosen.append(name)
    else:
        chosen = known
    if not chosen and not extra:
        if requested and known:  # adapters=["base"]: the base was asked for, the adapters exist
            notes.append(f"only the base was asked for; this session's adapters ({', '.join(known)}) are left out.")
        else:
            notes.append("this session has no adapter yet, so only the base model is shown.")
    trained = []
    for name in chosen:
        if not is_trained(session.model, name):
            notes.append(f"adapter {name!r} has not been trained yet (its LoRA B matrices are all zero, so its "
                         "outputs equal the base); showing the base only for it. Train with %%qlora_train.")
        else:
            trained.append(name)
    return [BASE, *trained, *extra], notes


def token_pieces(tokenizer, ids: list[int]) -> list[str]:
    """The text each token adds; an incomplete multi-byte character waits for the token that completes it."""
    pieces, shown = [], ""
    for i in range(len(ids)):
        text = tokenizer.decode(ids[: i + 1], skip_special_tokens=True)
        if text.endswith("\ufffd") and i < len(ids) - 1:
            pieces.append("")
            continue
        if text.startswith(shown):
            pieces.append(text[len(shown):])
        else:  # the tokenizer rewrote earlier text (whitespace clean-up): show what changed
            common = len(_commonprefix(shown, text))
            pieces.append(text[common:])
        shown = text
    return pieces


def _commonprefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]


def diverge_index(a: list[int], b: list[int], *, partial: bool = False) -> int | None:
    """First index where two token sequences differ, None if equal.

    When one is a prefix of the other they differ at the shorter length, except with ``partial=True``
    (``a`` is still being generated): ``a`` being a prefix of ``b`` then means "not departed yet" (None).
    """
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    if len(a) == len(b) or (partial and len(a) < len(b)):
        return None
    return min(len(a), len(b))


def diff_mask(ids: list[int], other: list[int]) -> list[bool]:
    """True for tokens of ``ids`` that are not part of a common run with ``other`` (difflib alignment)."""
    mask = [True] * len(ids)
    for block in difflib.SequenceMatcher(a=ids, b=other, autojunk=False).get_matching_blocks():
        for i in range(block.a, block.a + block.size):
            mask[i] = False
    return mask


def column_cell(tokenizer, column: str, run: dict[str, Any], reference: list[int] | None) -> dict[str, Any]:
    """One column's cell: text, ids, tokens, diff/diverge_at against ``reference`` and the run's numbers.

    ``reference`` is the base's ids for an adapter column, and the first adapter's ids for the base
    column (None while there is none yet: no marks). ``run`` is what :func:`.stream.generate_columns`
    measured: ``ids``, ``seconds`` and, with log-probs, ``logprobs`` and ``logprob_delta``.
    """
    ids = run["ids"]
    other = ids if reference is None else reference
    seconds = run.get("seconds") or 0.0
    lps = run.get("logprobs")
    cell: dict[str, Any] = {
        "text": tokenizer.decode(ids, skip_special_tokens=True),
        "ids": ids,
        "tokens": token_pieces(tokenizer, ids),
        "diff": diff_mask(ids, other),
        "diverge_at": diverge_index(ids, other) if reference is not None else None,
        "changed": column != BASE and ids != other,
        "n_tokens": len(ids),
        "seconds": seconds,
        "tokens_per_s": len(ids) / seconds if seconds > 0 else 0.0,
        "mean_logprob": sum(lps) / len(lps) if lps else None,
    }
    if run.get("logprob_delta") is not None:
        cell["logprob_delta"] = run["logprob_delta"]
    return cell


def column_cells(tokenizer, columns: list[str], runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every column's cell once all have run (the base's marks are against the first adapter)."""
    first = runs[columns[1]]["ids"] if len(columns) > 1 else None
    return {c: column_cell(tokenizer, c, runs[c], first if c == BASE else runs[BASE]["ids"]) for c in columns}


def mark_sources(cells: dict[str, dict[str, Any]], files: Any) -> None:
    """Mark each cell with what answered it: "base", "adapter" or "gguf" (an attached file, :mod:`.attached`)."""
    for column, cell in cells.items():
        cell["source"] = BASE if column == BASE else "gguf" if column in files else "adapter"
