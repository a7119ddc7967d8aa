"""Command-line flags and ``%magic?`` help generated from the option dataclasses.

One declaration per option: a field of :class:`~qlora_nb.config.LoadConfig`,
``PlanConfig`` or ``GenerateConfig`` (name, type, default, help, choices, range,
aliases, extra flag spellings) becomes ``--name`` (plus ``--alias`` spellings;
booleans get ``--name/--no-name`` only) with its help line, so a new option reaches
the magic and its help by being declared once. Values stay text here: the
dataclass coerces and validates them, and its errors name the option.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import textwrap
from collections.abc import Callable, Iterable
from typing import Any

from IPython.core.magic_arguments import argument, argument_group

from ..options import OptionsBase, field_type

_METAVAR_CHOICES_MAX = 24  # a longer a|b|c list goes in the help text instead of the metavar


def _default_text(value: Any) -> str | None:
    if value is None or value is dataclasses.MISSING:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or None
    return str(value)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _metavar_choices(f: dataclasses.Field) -> str | None:
    choices = f.metadata.get("choices")
    text = "|".join(map(str, choices or ()))
    return text if choices and len(text) <= _METAVAR_CHOICES_MAX else None


def field_help(f: dataclasses.Field, choices_in_metavar: bool = False) -> str:
    """The field's help, then its accepted choices/range and default, as one line."""
    meta = f.metadata
    parts = [meta.get("help", "").strip()]
    choices = meta.get("choices")
    if choices and not (choices_in_metavar and _metavar_choices(f)):
        parts.append(f"One of: {', '.join(map(str, choices))}.")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and hi is not None:
        parts.append(f"Range {'(' if meta.get('min_exclusive') else '['}{lo}, {hi}].")
    elif lo is not None:
        parts.append(f"{'More than' if meta.get('min_exclusive') else 'At least'} {lo}.")
    default = _default_text(_default(f))
    if default is not None:
        parts.append(f"Default: {default}.")
    return " ".join(p for p in parts if p)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _argument(cls: type[OptionsBase], f: dataclasses.Field) -> tuple[tuple[str, ...], dict[str, Any]]:
    meta = f.metadata
    kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": field_help(f, choices_in_metavar=True)}
    if field_type(cls, f.name) is bool:  # --name / --no-name; the aliases stay YAML and keyword spellings
        kwargs["action"] = argparse.BooleanOptionalAction
        return (_flag(f.name), *meta.get("flags", ())), kwargs
    names = (_flag(f.name), *(_flag(a) for a in meta.get("aliases", ())), *meta.get("flags", ()))
    kwargs["action"] = _StoreOnce
    kwargs["metavar"] = _metavar_choices(f) or f.name.upper()  # IPython's help shows a|b|c as <a|b|c>
    return names, kwargs


class _StoreOnce(argparse.Action):
    """Store a flag's value, refusing a second spelling of it (``--lr 1e-3 --learning-rate 2e-4``) or a repeat.

    argparse keeps the last value silently; the YAML body and the keyword arguments refuse a key given twice,
    and an alias is the same key (issue 25, class 2).
    """

    def __call__(self, parser, namespace, values, option_string=None):
        given = namespace.__dict__.setdefault("_given_flags", {})
        if self.dest in given:
            raise argparse.ArgumentError(self, f"given twice ({given[self.dest]} and {option_string}); keep one")
        given[self.dest] = option_string
        setattr(namespace, self.dest, values)


def option_flags(cls: type[OptionsBase], title: str, exclude: Iterable[str] = ()) -> Callable:
    """Decorator (under ``@magic_arguments()``): one flag per field of ``cls``, in a help group named ``title``.

    It must be the last ``@argument``-style decorator in source order: an IPython
    argument group collects every argument declared after it.
    """
    skip = set(exclude)
    fields = [f for f in dataclasses.fields(cls) if f.name not in skip]

    def deco(func):
        for f in reversed(fields):  # IPython applies argument decorators in source order, i.e. reversed here
            names, kwargs = _argument(cls, f)
            func = argument(*names, **kwargs)(func)
        return argument_group(title)(func)

    return deco


def options_from_args(args: argparse.Namespace, cls: type[OptionsBase], exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The given (not None) arguments that are fields of ``cls``, as a name -> text mapping for ``from_options``."""
    skip = set(exclude)
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if f.name not in skip and getattr(args, f.name, None) is not None}


def options_doc(cls: type[OptionsBase], heading: str, width: int = 78) -> Callable:
    """Decorator: append one entry per field of ``cls`` (name, default, help) to the magic's docstring.

    For cell magics whose options are a YAML body rather than flags (``%%qlora_train``).
    """
    lines = ["", heading]
    for f in dataclasses.fields(cls):
        names = ", ".join([f.name, *f.metadata.get("aliases", ())])
        lines += textwrap.wrap(field_help(f), width, initial_indent=f"  {names}: ", subsequent_indent="      ")

    def deco(func):
        func.__doc__ = inspect.cleandoc(func.__doc__ or "") + "\n" + "\n".join(lines) + "\n"
        return func

    return deco


__all__ = ["field_help", "option_flags", "options_doc", "options_from_args"]
