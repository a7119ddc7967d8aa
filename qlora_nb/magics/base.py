"""What every magic shares: argument parsing that raises QloraError, YAML bodies, $variables, binding.

Magics stay thin: parse, call the engine (a plain function or Session method),
bind the result in the user namespace, display it.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from IPython.core.magic import Magics
from IPython.core.magic_arguments import parse_argstring

from ..errors import QloraError

DEFAULT_SESSION = "qlora"


def parse_args(func, line: str, magic: str):
    """``parse_argstring`` with IPython's ``UsageError`` (what ``MagicArgumentParser.error`` raises) as a QloraError."""
    from IPython.core.error import UsageError

    try:
        return parse_argstring(func, line)
    except UsageError as exc:
        raise QloraError(f"{exc}.", where=f"%{magic}", hint=f"See %{magic}? for the accepted flags.") from None
    except ValueError as exc:  # shlex: unbalanced quotes
        raise QloraError(f"could not split the arguments ({exc}).", where=f"%{magic}",
                         hint="Close every quote.") from None


def parse_yaml_body(body: str, magic: str) -> dict[str, Any]:
    """The cell body as a YAML mapping (empty body: no options). Strings stay strings."""
    import yaml

    text = body or ""
    if not text.strip():
        return {}
    try:
        data = yaml.load(text, Loader=_TextLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"%%{magic} body" + (f", line {mark.line + 1}" if mark is not None else "")
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise QloraError(f"the cell body is not valid YAML ({problem}).", where=where,
                         hint="Write one `option: value` per line, e.g. `data: train.jsonl`.") from None
    except Exception as exc:  # any other parser failure is still the body's fault
        raise QloraError(f"the cell body could not be read as YAML ({type(exc).__name__}).",
                         where=f"%%{magic} body", hint="Write one `option: value` per line.") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise QloraError(f"the cell body must be a mapping of options, got a {type(data).__name__}.",
                         where=f"%%{magic} body", hint="Write one `option: value` per line, e.g. `max_steps: 60`.")
    out = {}
    for k, v in data.items():
        if not isinstance(k, str):
            raise QloraError(f"option names must be text, got {k!r}.", where=f"%%{magic} body",
                             hint="Write `name: value`.")
        out[k] = v
    return out


def _make_text_loader():
    """A SafeLoader that keeps scalars as the text the user wrote.

    YAML 1.1 would turn ``2024-01-01`` into a date, ``007`` into 7, ``1.50``
    into 1.5 and ``no`` into False; a template, probe or run name must reach the
    toolkit exactly as written. Options are typed later, field by field, by
    :meth:`qlora_nb.options.OptionsBase.from_options`, which parses numbers and
    booleans from text. Only ``null``/``~``/empty stay None.
    """
    import yaml

    class TextLoader(yaml.SafeLoader):
        pass

    TextLoader.yaml_implicit_resolvers = {
        k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
        for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    for tag in ("int", "float", "bool", "timestamp"):
        TextLoader.add_constructor(f"tag:yaml.org,2002:{tag}", lambda loader, node: loader.construct_scalar(node))
    return TextLoader


class _LazyLoader:
    _cls = None

    def __call__(self, stream):
        if _LazyLoader._cls is None:
            _LazyLoader._cls = _make_text_loader()
        return _LazyLoader._cls(stream)


_TextLoader = _LazyLoader()


def split_line(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise QloraError(f"could not split the arguments ({exc}).", hint="Close every quote.") from None


class QloraMagicsBase(Magics):
    """Shared helpers for the magics classes."""

    def resolve_value(self, value: Any, where: str) -> Any:
        """``$name`` refers to a variable in the notebook namespace."""
        if isinstance(value, str) and value.startswith("$") and len(value) > 1:
            name = value[1:]
            if name not in self.shell.user_ns:
                raise QloraError(f"no variable named {name!r} in the notebook.", where=where,
                                 hint="Define it in a cell above, or pass a file path instead.")
            return self.shell.user_ns[name]
        return value

    def resolve_values(self, options: dict[str, Any], where: str) -> dict[str, Any]:
        return {k: self.resolve_value(v, f"{where} option {k!r}") for k, v in options.items()}

    def session(self, name: str | None = None):
        from ..engine.session import Session

        name = name or DEFAULT_SESSION
        obj = self.shell.user_ns.get(name)
        if obj is None:
            raise QloraError(f"no session named {name!r} in the notebook.", where="--session",
                             hint="Run %qlora_load first (or pass --session NAME of an existing one).")
        if not isinstance(obj, Session):
            raise QloraError(f"{name!r} is a {type(obj).__name__}, not a qlora_nb Session.", where="--session",
                             hint="Run %qlora_load, or pass --session NAME.")
        return obj

    def bind(self, name: str, value: Any) -> None:
        if not name.isidentifier():
            raise QloraError(f"{name!r} is not a valid Python name.", where="--name/-o",
                             hint="Use letters, digits and underscores.")
        self.shell.user_ns[name] = value


def display(obj: Any) -> None:
    from IPython.display import display as _display

    _display(obj)


def friendly(magic: str):
    """Decorator for magic methods: internal errors become one QloraError paragraph.

    ``--debug`` anywhere in the line keeps the original exception (and its
    traceback). Memory errors are turned into :class:`QloraOOMError` with the
    planner's advice by :func:`qlora_nb.engine.lifecycle.explain_oom`.
    """
    import functools

    def wrap(fn):
        @functools.wraps(fn)
        def inner(self, line: str = "", cell: str | None = None, *args, **kwargs):
            line = line or ""
            debug = "--debug" in line.split()
            if debug:
                line = " ".join(t for t in line.split(" ") if t != "--debug")
            error: QloraError | None = None
            try:
                if cell is None:
                    return fn(self, line)
                return fn(self, line, cell)
            except QloraError as exc:
                exc._qlora_debug = debug
                if not debug and exc.__suppress_context__:
                    exc.__context__ = None  # `raise ... from None`: drop the hidden frames it still holds
                raise
            except (KeyboardInterrupt, SystemExit, GeneratorExit):
                raise
            except Exception as exc:
                if debug:
                    raise
                error = _as_qlora_error(exc, magic)
            # Raised outside the except block: the original exception (and the frames, tensors and
            # session its traceback holds) is not kept alive as __context__ of the error users see.
            raise error

        return inner

    return wrap


def _as_qlora_error(exc: BaseException, magic: str) -> QloraError:
    """An OOM explained with the planner's advice, or any other library error as one paragraph."""
    from ..engine.lifecycle import explain_oom

    oom = explain_oom(exc, f"%{magic}")
    if oom is not None:
        return oom
    first = (str(exc).strip().splitlines() or [""])[0]
    return QloraError(f"{type(exc).__name__}: {first}".rstrip(": ") + ".", where=f"%{magic}",
                      hint="This looks like a bug or an unsupported setting; rerun with --debug to see the "
                           "traceback.")
