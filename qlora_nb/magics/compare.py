"""%qlora_compare: base vs adapted generations side by side (Python twin: ``Session.compare``)."""

from __future__ import annotations

from typing import Any

from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from ..config import GenerateConfig
from ..errors import QloraError
from .base import QloraMagicsBase, friendly, parse_args
from .flags import option_flags, options_from_args, output_flag, shared_flags


@magics_class
class CompareMagics(QloraMagicsBase):
    @magic_arguments()
    @argument("prompt", nargs="*", help='The prompt in quotes, or $variable holding a str or a list of str.')
    @argument("--greedy", dest="sample", action="store_const", const=False, help="Same as --no-sample.")
    @argument("--data", default=None, choices=["val"], help="Prompts from data rows: 'val' is the validation split "
                                                             "of the last training run.")
    @argument("--n", default=None, help="How many rows with --data (8).")
    @shared_flags("session", "force")
    @output_flag("CompareResult", "compare_result")
    @option_flags(GenerateConfig, "generation options (also keyword arguments of Session.compare)")
    @line_magic
    @friendly("qlora_compare")
    def qlora_compare(self, line: str = ""):
        """Generate from the base (adapters disabled) and each adapter on the same weights, seed and settings."""
        args = parse_args(self.qlora_compare, line, "qlora_compare", self.ns, keep_quotes=True, flag_values_only=True)
        args.quoted = [_is_quoted(w) for w in args.prompt]  # "A" "B" are two prompts; plain words are one
        for key, value in vars(args).items():  # IPython's argument splitter keeps quotes
            setattr(args, key, [_unquote(v) for v in value] if isinstance(value, list) else _unquote(value))
        options: dict[str, Any] = options_from_args(args, GenerateConfig)
        logprobs = GenerateConfig.from_options(options).logprobs  # bad flags fail before any heavy import
        options.pop("logprobs", None)
        session = self.session(args.session)
        prompts = self._prompts(args, session)
        self.check_bind(args.output, "CompareResult", flag="-o", force=args.force)
        widget = self._widget(session) if getattr(self.shell, "kernel", None) is not None else None
        handle = _display(widget)
        try:
            result = session.compare(prompts, logprobs=logprobs, **options)
        except BaseException as exc:
            if widget is not None:
                _withdraw(widget, handle, exc)
            raise
        finally:
            if widget is not None and widget._unsubscribe is not None:
                widget._unsubscribe()
        self.bind(args.output, result, flag="-o", force=args.force)
        if handle is not None:
            handle.update(widget)  # the finished text/plain for front ends without widgets
        else:
            print(result.text())

    def _prompts(self, args, session) -> Any:
        if args.data:
            if args.prompt:
                raise QloraError("give either a prompt or --data, not both.", where="%qlora_compare")
            try:
                n = int(args.n or 8)
            except ValueError:
                raise QloraError(f"{args.n!r} is not a number.", where="--n", hint="Write e.g. --n 8.") from None
            if n < 1:
                raise QloraError(f"{n} rows asked for.", where="--n", hint="Use --n 1 or more.")
            rows = getattr(session, "val_rows", None)
            if not rows:
                raise QloraError("this session has no validation rows: it has not been trained yet, or trained "
                                 "with val_split: 0.", where="--data val",
                                 hint="Train with %%qlora_train first, or pass prompts (\"text\" or $list).")
            return list(rows[:n])
        if args.n is not None:  # --n -1 next to a prompt would otherwise be dropped without a word
            raise QloraError(f"--n {args.n} only applies with --data val; a prompt given on the line is one row.",
                             where="--n", hint="Drop --n, or use --data val --n 8 for rows of the validation split.")
        if not args.prompt:
            raise QloraError("no prompt given.", where="%qlora_compare",
                             hint='Write %qlora_compare "your prompt", pass $variable, or use --data val --n 8.')
        if len(args.prompt) == 1 and args.prompt[0].startswith("$"):
            value = self.resolve_value(args.prompt[0], "%qlora_compare prompt")
            if isinstance(value, str) or (isinstance(value, (list, tuple)) and all(isinstance(v, (str, dict))
                                                                                    for v in value)):
                return value
            raise QloraError(f"{args.prompt[0]} is a {type(value).__name__}; expected a str or a list of str.",
                             where="%qlora_compare prompt", hint="Assign the prompt text (or a list of texts).")
        if len(args.prompt) > 1 and all(args.quoted):  # "A" "B": each quoted text is its own prompt
            return list(args.prompt)
        if len(args.prompt) > 1 and any(args.quoted):
            raise QloraError(f"the line mixes quoted and unquoted words ({len(args.prompt)} of them); it is not "
                             "clear where one prompt ends.", where="%qlora_compare prompt",
                             hint='Quote each prompt: %qlora_compare "first prompt" "second prompt", or pass a '
                                  "$list of prompts.")
        return " ".join(args.prompt)  # unquoted words form one prompt

    def _widget(self, session):
        try:
            from ..views.compare import CompareWidget
        except ImportError:  # no anywidget: the text view still works
            return None
        return CompareWidget.for_session(session)


def _is_quoted(word: str) -> bool:
    return len(word) >= 2 and word[0] == word[-1] and word[0] in "'\""


def _unquote(value: Any) -> Any:
    """``"text"`` or ``'text'`` as a Python string literal (escapes such as \\n work); other values as given."""
    if not (isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""):
        return value
    import ast

    try:
        out = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value[1:-1]
    return out if isinstance(out, str) else value[1:-1]


def _withdraw(widget, handle, exc: BaseException) -> None:
    """A failed compare leaves no empty widget: an interrupt keeps what streamed, an error removes the view."""
    if isinstance(exc, KeyboardInterrupt) and getattr(widget, "rows", None):
        widget.status = "stopped"
        return
    if handle is not None:
        handle.update({"text/plain": ""}, raw=True)  # the QloraError paragraph below says what happened
    widget.close()


def _display(widget):
    if widget is None:
        return None
    from IPython.display import display

    return display(widget, display_id=True)
