"""Command-line flags and ``%magic?`` help generated from the option dataclasses.

One declaration per option: a field of an options class in :mod:`qlora_nb.config`
(name, type, default, help, choices, range, aliases, extra flag spellings)
becomes ``--name`` (plus ``--alias`` spellings; booleans get ``--name/--no-name``
only) with its help line, so a new option reaches the magic and its help by
being declared once. Values stay text here: the dataclass coerces and validates
them, and its errors name the option. The flags many magics share (``--session``,
``--force``, ``--quiet``, ``-o``) are declared once in :class:`MagicFlags`.
Every generated flag is recorded on the magic (``__qlora_flags__``), so a test
can check that no magic grows a hand-written one.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from IPython.core.magic_arguments import argument, argument_group

from ..config import SESSION_NAME
from ..options import OptionsBase, field_default, field_type, option

_METAVAR_CHOICES_MAX = 24  # a longer a|b|c list goes in the help text instead of the metavar


def _default_text(value: Any) -> str | None:
    if value is None or value is dataclasses.MISSING:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or None
    return str(value)


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
    default = _default_text(field_default(f))
    if default is not None:
        parts.append(f"Default: {default}.")
    return " ".join(p for p in parts if p)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _argument(cls: type[OptionsBase], f: dataclasses.Field) -> tuple[tuple[str, ...], dict[str, Any]]:
    meta = f.metadata
    # argparse %-formats help texts; a declaration's help is plain text ("until %qlora_unload")
    text = field_help(f, choices_in_metavar=True).replace("%", "%%")
    kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": text}
    if field_type(cls, f.name) is bool:  # --name / --no-name; the aliases stay YAML and keyword spellings
        kwargs["action"] = argparse.BooleanOptionalAction
        return (_flag(f.name), *meta.get("flags", ())), kwargs
    names = (_flag(f.name), *(_flag(a) for a in meta.get("aliases", ())), *meta.get("flags", ()))
    kwargs["action"] = _StoreOnce
    kwargs["metavar"] = _metavar_choices(f) or f.name.upper()  # IPython's help shows a|b|c as <a|b|c>
    return names, kwargs


def _record(func, names: Iterable[str], source: str) -> None:
    """Note on the magic that flags ``names`` were generated from ``source`` (read by the flag contract test)."""
    if "__qlora_flags__" not in func.__dict__:
        func.__qlora_flags__ = {}
    for name in names:
        func.__qlora_flags__[name] = source


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


def option_flags(cls: type[OptionsBase], title: str | None, exclude: Iterable[str] = (),
                 only: Iterable[str] | None = None) -> Callable:
    """Decorator (under ``@magic_arguments()``): one flag per field of ``cls``, in a help group named ``title``.

    ``only``: just these fields (e.g. ``TrainConfig``'s ``resume`` on ``%%qlora_train``'s line).
    With a ``title`` it must be the last ``@argument``-style decorator in source order: an
    IPython argument group collects every argument declared after it.
    """
    skip = set(exclude)
    keep = set(only) if only is not None else None
    fields = [f for f in dataclasses.fields(cls) if f.name not in skip and (keep is None or f.name in keep)]

    def deco(func):
        for f in reversed(fields):  # IPython applies argument decorators in source order, i.e. reversed here
            names, kwargs = _argument(cls, f)
            func = argument(*names, **kwargs)(func)
            negated = [f"--no-{n[2:]}" for n in names if n.startswith("--")] if "action" in kwargs else []
            _record(func, [*names, *negated], cls.__name__)
        return argument_group(title)(func) if title else func

    return deco


@dataclass
class MagicFlags(OptionsBase):
    """The flags that say where a magic's result goes, declared once for every magic that has them."""

    _kind: ClassVar[str] = "magic flag"

    session: str = option(SESSION_NAME, "The Session variable to use.")
    force: bool = option(False, "Bind the result even over a Session, your own variable or a builtin of that name.")
    quiet: bool = option(False, "Show nothing while it runs: no breakdown, dashboard or progress lines.")


def shared_flags(*names: str) -> Callable:
    """Decorator: the :class:`MagicFlags` ``names`` as flags with their real defaults (``--session qlora``)."""
    fields = {f.name: f for f in dataclasses.fields(MagicFlags)}

    def deco(func):
        for name in reversed(names):
            f = fields[name]
            kwargs: dict[str, Any] = {"dest": name, "help": field_help(f)}
            if field_type(MagicFlags, name) is bool:
                kwargs["action"] = "store_true"
            else:
                kwargs.update(default=f.default, metavar=name.upper())
            func = argument(_flag(name), **kwargs)(func)
            _record(func, [_flag(name)], MagicFlags.__name__)
        return func

    return deco


def output_flag(what: str, default: str | None = None) -> Callable:
    """Decorator: ``-o/--output NAME``, the variable the ``what`` (e.g. "TrainResult") is bound to."""
    text = f"Bind the {what} to this variable" + (f" (default: {default})." if default else " (default: not bound).")

    def deco(func):
        func = argument("-o", "--output", dest="output", default=default, metavar="NAME", help=text)(func)
        _record(func, ["-o", "--output"], "output_flag")
        return func

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


__all__ = ["MagicFlags", "field_help", "option_flags", "options_doc", "options_from_args", "output_flag",
           "shared_flags"]
