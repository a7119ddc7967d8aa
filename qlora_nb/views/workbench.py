"""What the studio and the playground share: the option controls from TrainConfig, YAML values, error text, CSS.

Kept apart from the widget classes so the option metadata and the one-paragraph error text can be used (and
tested) without a front-end.
"""

from __future__ import annotations

import re
from typing import Any

from ..config import TrainConfig
from .base import asset


def workbench_css() -> str:
    """The shared widget styles plus the studio/playground ones (one stylesheet string for anywidget)."""
    return asset("qlora.css").read_text(encoding="utf-8") + "\n" + asset("workbench.css").read_text(encoding="utf-8")


OPTIONS = ("max_steps", "epochs", "learning_rate", "batch_size", "gradient_accumulation_steps", "cutoff_len",
           "val_split", "eval_steps", "optimizer", "gradient_checkpointing", "packing")
PREVIEW_ROWS = 3


def option_specs(names: tuple[str, ...] = OPTIONS) -> list[dict[str, Any]]:
    """One control description per option, read from TrainConfig's fields (name, kind, default, help, range)."""
    from ..options import option_specs as specs_of

    return specs_of(TrainConfig, names)


def default_values() -> dict[str, Any]:
    return {s["name"]: s["default"] for s in option_specs()}


def yaml_value(value: Any) -> str:
    """A value as ``%%qlora_train``'s body reads it back *as literal text*, whatever the characters.

    Two readers stand between the cell and the option: YAML, then the magic's
    ``$name`` rule (:func:`qlora_nb.textsplit.interpolate`), so text starting
    with ``$`` gets one more ``$`` (``$$`` is a literal ``$``). Anything beyond
    a plain ASCII word is written by PyYAML itself with ``allow_unicode`` (an
    emoji stays one character; ``json.dumps`` wrote it as two surrogate escapes
    that YAML reads back as two lone surrogates), on one line: text with line
    breaks or characters YAML may not hold raw gets a double-quoted scalar with escapes.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # epochs: 2 stays 2 in the copied cell (float fields read an int back as float)
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if text.startswith("$"):
        text = "$" + text
    if re.fullmatch(r"[A-Za-z0-9_./$][A-Za-z0-9_./$~-]*", text) and text.lower() not in ("null", "true", "false",
                                                                                       "yes", "no", "on", "off"):
        return text
    import yaml

    for style in (None, '"'):  # PyYAML's own choice keeps emoji raw; double quotes escape line breaks
        out = yaml.dump(text, Dumper=yaml.SafeDumper, default_style=style, allow_unicode=True, width=2**31 - 1)
        out = out.removesuffix("\n").removesuffix("\n...").removesuffix("\n")
        # PyYAML's own choice can hold a raw U+0085 that its reader folds into a space: keep only what reads back
        if "\n" not in out and yaml.safe_load(out) == text:
            return out
    return out


def error_text(exc: BaseException, where: str = "%qlora_studio") -> str:
    """The one paragraph the magics print for ``exc`` (a QloraError as is, an OOM with advice, else one line)."""
    from ..engine.lifecycle import as_qlora_error

    return str(as_qlora_error(exc, where, rerun="run the copied cell"))
