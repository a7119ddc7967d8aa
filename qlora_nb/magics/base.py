"""What every magic shares: argument parsing that raises QloraError, YAML bodies, $variables, binding.

Magics stay thin: parse, call the engine (a plain function or Session method),
bind the result in the user namespace, display it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from IPython.core.magic import Magics, no_var_expand

from ..config import SESSION_NAME
from ..errors import QloraError
from ..textsplit import interpolate, split_args
from .names import check_bind

DEFAULT_SESSION = SESSION_NAME  # kept as a name here; declared once in qlora_nb.config


def parse_args(func, line: str, magic: str, namespace: Mapping[str, Any] | None = None, *,
               keep_quotes: bool = False, flag_values_only: bool = False):
    """Split ``line`` like a shell (:func:`qlora_nb.textsplit.split_args`) and parse it; errors name the flag.

    IPython's ``UsageError`` (what ``MagicArgumentParser.error`` raises) becomes a QloraError.
    With ``namespace``, a word that is exactly ``$name`` becomes that variable's
    text, and ``$$word`` the literal ``$word``: the magics turn off IPython's own
    ``$``/``{}`` expansion, which pastes a variable's text into the line where a
    path with spaces splits in two. ``keep_quotes``: IPython's splitter, which
    keeps quotes (``%qlora_compare`` reads quoted prompts as Python string
    literals, escapes included, and resolves its own ``$list`` prompts).
    ``flag_values_only``: expand ``$name`` only as the value of a flag (``--gguf $file``), for magics whose
    positional words resolve their own ``$list``.
    """
    import argparse

    from IPython.core.error import UsageError

    try:
        if keep_quotes:
            from IPython.utils.process import arg_split

            argv = arg_split(line or "")
        else:
            argv = split_args(line, where=f"%{magic}")
        if namespace is not None:
            takes = {o for a in func.parser._actions for o in a.option_strings if a.nargs != 0}
            argv = [w if flag_values_only and not (i and argv[i - 1] in takes)
                    else _word_value(w, argv[i - 1] if i else magic, namespace, magic) for i, w in enumerate(argv)]
        args = func.parser.parse_args(argv)
        vars(args).pop("_given_flags", None)  # flags._StoreOnce's record of which spelling set each option
        return args
    except (UsageError, argparse.ArgumentError) as exc:
        raise QloraError(f"{exc}.", where=f"%{magic}", hint=f"See %{magic}? for the accepted flags.") from None
    except ValueError as exc:  # shlex: unbalanced quotes
        raise QloraError(f"could not split the arguments ({exc}).", where=f"%{magic}",
                         hint="Close every quote.") from None


def _word_value(word: str, before: str, namespace: Mapping[str, Any], magic: str) -> str:
    """``$name`` -> the variable as text (paths, numbers); other objects are refused with what to do."""
    from pathlib import PurePath

    value = interpolate(word, namespace, f"%{magic}")
    if value is word or isinstance(value, str):
        return value
    if isinstance(value, (PurePath, int, float)) and not isinstance(value, bool):
        return str(value)
    flag = before if before.startswith("-") else "a positional argument"
    hint = "Pass a path or a value, or call the Python twin with the object."
    if _is_table(value):
        hint = (f"A magic line takes text; save the rows first, e.g. {word[1:]}.to_json('data.jsonl', "
                "orient='records', lines=True), and pass data.jsonl, or call the Python twin with the object.")
    raise QloraError(f"{word} is a {type(value).__name__}, but {flag} takes text (a path or a value).",
                     where=f"%{magic} {flag}", hint=hint)


def _is_table(value: Any) -> bool:
    return type(value).__name__ in ("DataFrame", "Dataset", "list", "tuple", "dict")


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
        def construct_mapping(self, node, deep=False):
            """PyYAML keeps the last of two equal keys; a repeated option must be refused, not dropped."""
            seen: dict[Any, int] = {}
            for key_node, _ in getattr(node, "value", []):
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeConstructor reports it
                    continue
                if first is None:
                    seen[key] = key_node.start_mark.line + 1
                else:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} appears twice (first on line {first}); keep one",
                        key_node.start_mark)
            return super().construct_mapping(node, deep)

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


class QloraMagicsBase(Magics):
    """Shared helpers for the magics classes."""

    @property
    def ns(self) -> dict[str, Any]:
        return self.shell.user_ns

    def resolve_value(self, value: Any, where: str) -> Any:
        """A value that is exactly ``$name`` is that notebook variable; ``$$text`` is the text ``$text``."""
        return interpolate(value, self.shell.user_ns, where)

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

    def check_bind(self, name: str, what: str, *, flag: str, force: bool = False,
                   replaces_session: bool = False) -> None:
        """Refuse, before any work, a name that would hide a builtin or replace the user's object."""
        check_bind(self.shell.user_ns, name, flag=flag, what=what, force=force, replaces_session=replaces_session)

    def bind(self, name: str, value: Any, *, flag: str = "--name/-o", force: bool = False) -> None:
        check_bind(self.shell.user_ns, name, flag=flag, what=type(value).__name__, force=force,
                   replaces_session=type(value).__name__ == "Session")
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

        no_var_expand(inner)  # `$name` is resolved by parse_args / resolve_value, as one word
        return inner

    return wrap


def _as_qlora_error(exc: BaseException, magic: str) -> QloraError:
    """An OOM explained with the planner's advice, or any other library error as one paragraph."""
    from ..engine.lifecycle import as_qlora_error

    return as_qlora_error(exc, f"%{magic}")
