"""The option machinery: dataclass fields that carry their own help, choices, range and aliases.

Each field's ``metadata`` (the peft ``LoraConfig`` style) drives validation,
YAML round-trips, the error messages, the magics' generated flags and
``%magic?`` help (:mod:`qlora_nb.magics.flags`) and the widgets' controls
(:func:`option_specs`). A concept that several option classes share (the LoRA
rank, the batch size…) is a :class:`Concept`, declared once and used as each
class's field, so its name, default, help and range cannot drift apart. The
declarations themselves are in :mod:`qlora_nb.config`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from .errors import QloraError, did_you_mean

T = TypeVar("T", bound="OptionsBase")

INT_MAX = 2**63 - 1
_TRUE = {"true", "yes", "on", "1", "y"}
_FALSE = {"false", "no", "off", "0", "n", "none"}


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    choices: tuple[Any, ...] | None = None,
    min: float | None = None,
    max: float | None = None,
    min_exclusive: bool = False,
    aliases: tuple[str, ...] = (),
    flags: tuple[str, ...] = (),
    factory: Any = dataclasses.MISSING,
    words: Mapping[str, Any] | None = None,
    concept: Concept | None = None,
) -> Any:
    """A dataclass field with the metadata that validation, the magics' flags and their help read.

    ``aliases`` are other accepted names (YAML keys, keyword arguments and
    ``--flags``); ``flags`` are extra command-line spellings only (e.g. ``-r``);
    ``words`` are values written as text (``{"all": None}``: ``--sample all``).
    """
    meta = {
        "help": help,
        "choices": choices,
        "min": min,
        "max": max,
        "min_exclusive": min_exclusive,
        "aliases": aliases,
        "flags": flags,
        "words": dict(words or {}),
        "concept": concept,
    }
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


class Concept:
    """One option concept, declared once: its name, default, help, choices, range and aliases.

    Calling it gives a fresh dataclass field for each options class that has the
    concept (``r: int = LORA_R()``), so ``LoadConfig`` and ``PlanConfig`` cannot
    drift apart: the field must be named ``name`` (checked when the class is
    built) and a test checks that no two classes declare one name differently.
    """

    def __init__(self, name: str, default: Any = dataclasses.MISSING, help: str = "", **meta: Any) -> None:
        self.name, self.default, self.help, self.meta = name, default, help, meta

    def __call__(self) -> Any:
        return option(self.default, self.help, concept=self, **self.meta)

    def __repr__(self) -> str:
        return f"Concept({self.name!r})"


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) == 1:
            return args[0], optional
        return typing.Union[tuple(args)], optional  # noqa: UP007
    return tp, False


def field_type(cls: type, name: str) -> Any:
    """The declared type of field ``name`` without ``| None`` (``int | None`` -> ``int``)."""
    return _strip_optional(typing.get_type_hints(cls)[name])[0]


def _type_hint(base: Any, words: Mapping[str, Any] | None) -> str | None:
    extra = "".join(f" or {w!r}" for w in words or {})
    if base is int:
        return f"It takes whole numbers{extra}."
    return f"It takes a number{extra}." if base is float and extra else None


def _coerce(name: str, value: Any, tp: Any, where: str, words: Mapping[str, Any] | None = None) -> Any:
    """Turn YAML / command-line values into the field's type, or say why not."""
    base, optional = _strip_optional(tp)
    if value is None:
        if optional or base is Any:  # Any fields (data) say what they need in validate()
            return None
        raise QloraError(f"{name} needs a value, got nothing.", where=where)
    if optional and isinstance(value, str) and value.strip().lower() in ("none", "null"):
        return None
    bad = QloraError(
        f"{value!r} is not a valid value for {name} (expected {getattr(base, '__name__', str(base))}).",
        where=where, hint=_type_hint(base, words),
    )
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise bad
    if base is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, str):
            try:
                value = int(value.strip().replace("_", ""))
            except ValueError:
                raise bad from None
        if not isinstance(value, int):
            raise bad
        if abs(value) > INT_MAX:  # torch, numpy and the Trainer hold counts in int64; past that they fail inside
            raise QloraError(f"{str(value)[:12]}… ({len(str(abs(value)))} digits) is too large for {name}.", where=where, hint=f"It must be <= {INT_MAX}.")
        return value
    if base is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            try:
                out = float(value)
            except OverflowError:  # an int beyond 1.8e308
                raise bad from None
        elif isinstance(value, str):
            try:
                out = float(value.strip())
            except ValueError:
                raise bad from None
        else:
            raise bad
        if not math.isfinite(out):
            raise bad
        return out
    if base is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    origin = typing.get_origin(base)
    if origin in (list, tuple):
        if isinstance(value, str):
            from .textsplit import split_list

            items = split_list(value, where)  # a comma inside a quoted item does not split it
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise bad
        return items
    # Any / unions of complex types (e.g. data: path, list of dicts, DataFrame): keep as given.
    return value


@dataclass
class OptionsBase:
    """Validation, aliases and YAML round-trip shared by every options dataclass."""

    _kind: ClassVar[str] = "option"
    _flag_in_where: ClassVar[bool] = False  # errors also name the --flag (options that are mostly flags)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A :class:`Concept` used under another name would be two names for one thing: refuse it."""
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            concept = getattr(value, "metadata", {}).get("concept") if isinstance(value, dataclasses.Field) else None
            if concept is not None and concept.name != name:
                raise TypeError(f"{cls.__name__}.{name} uses the concept {concept.name!r} under another name")

    @classmethod
    def where(cls, name: str) -> str:
        """How an error names option ``name``: ``merge option 'dtype' (--dtype)``."""
        text = f"{cls._kind} {name!r}"
        return f"{text} (--{name.replace('_', '-')})" if cls._flag_in_where else text

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def aliases(cls) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in dataclasses.fields(cls):
            for a in f.metadata.get("aliases", ()):
                out[a] = f.name
        return out

    @classmethod
    def from_options(cls: type[T], options: Mapping[str, Any] | None = None, **kwargs: Any) -> T:
        """Build from user options: resolve aliases, refuse unknown keys, coerce and validate."""
        merged: dict[str, Any] = {}
        for src in (options or {}, kwargs):
            if not isinstance(src, Mapping):
                raise QloraError(
                    f"options must be a mapping of name: value, got {type(src).__name__}.",
                    hint="Write one `name: value` per line.",
                )
            spelled: dict[str, str] = {}
            for key, value in src.items():
                name = cls._canonical(str(key))
                if name in spelled:  # an alias and its name (lr + learning_rate) are one key written twice
                    raise QloraError(
                        f"{spelled[name]!r} and {key!r} both set {name}; which one is meant is not clear.",
                        where=f"{cls._kind} {name!r}", hint=f"Keep one of them (the usual spelling is {name}).",
                    )
                spelled[name] = str(key)
                merged[name] = value
        return cls(**merged)

    @classmethod
    def _canonical(cls, key: str) -> str:
        k = key.strip().replace("-", "_")
        names = cls.field_names()
        if k in names:
            return k
        aliases = cls.aliases()
        if k in aliases:
            return aliases[k]
        raise QloraError(
            f"unknown {cls._kind} {key!r}.",
            hint=did_you_mean(k, names + list(aliases)),
        )

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            where = self.where(f.name)
            meta = f.metadata
            value = getattr(self, f.name)
            words = meta.get("words") or {}
            if isinstance(value, str) and value.strip().lower() in words:
                value = words[value.strip().lower()]
            value = _coerce(f.name, value, hints[f.name], where, words)
            choices = meta.get("choices")
            if choices is not None and value is not None:
                if isinstance(value, str):
                    norm = value.strip().lower()
                    match = next((c for c in choices if str(c).lower() == norm), None)
                    if match is None:
                        raise QloraError(f"{value!r} is not accepted.", where=where, hint=did_you_mean(value, choices))
                    value = match
                elif value not in choices:
                    raise QloraError(
                        f"{value!r} is not accepted.", where=where, hint=f"Accepted: {', '.join(map(str, choices))}."
                    )
            lo, hi = meta.get("min"), meta.get("max")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if lo is not None and (value < lo or (meta.get("min_exclusive") and value == lo)):
                    op = ">" if meta.get("min_exclusive") else ">="
                    raise QloraError(f"{value!r} is out of range.", where=where, hint=f"It must be {op} {lo}.")
                if hi is not None and value > hi:
                    raise QloraError(f"{value!r} is out of range.", where=where, hint=f"It must be <= {hi}.")
            object.__setattr__(self, f.name, value)
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; subclasses override."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-safe values (data objects are summarised, not embedded)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (str, int, float, bool)) or v is None:
                out[f.name] = v
            elif isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float, bool)) for x in v):
                out[f.name] = list(v)
            else:
                out[f.name] = f"<{type(v).__name__}>"
        return out

    def replace(self: T, **changes: Any) -> T:
        current = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for k, v in changes.items():
            current[self._canonical(k)] = v
        return type(self)(**current)


def _kind_of(cls: type, f: dataclasses.Field) -> str:
    tp = field_type(cls, f.name)
    if f.metadata.get("choices"):
        return "choice"
    return {bool: "bool", int: "int", float: "float", str: "str"}.get(tp, "list" if typing.get_origin(tp) in
                                                                          (list, tuple) else "text")


def field_default(f: dataclasses.Field) -> Any:
    """A field's default value (a fresh one from its factory), or None when it has none."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def option_specs(cls: type[OptionsBase], names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """One widget control description per field of ``cls`` (all, or ``names`` in that order).

    What the widgets draw their controls from (kind, choices, range, default,
    help), so a choice list or a default lives only in the declaration.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    specs = []
    for name in names if names is not None else fields:
        f = fields[name]
        meta = f.metadata
        default = field_default(f)
        specs.append({"name": name, "kind": _kind_of(cls, f), "default": default, "help": meta.get("help", ""),
                      "choices": list(meta["choices"]) if meta.get("choices") else None,
                      "min": meta.get("min"), "max": meta.get("max"), "min_exclusive": bool(meta.get("min_exclusive")),
                      "optional": _strip_optional(hints[name])[1]})
    return specs
