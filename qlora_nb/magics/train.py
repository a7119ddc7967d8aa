"""``%%qlora_train``: a YAML cell body of TrainConfig options → ``Session.train`` with a live view."""

from __future__ import annotations

from IPython.core.magic import cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from ..config import TrainConfig
from .base import DEFAULT_SESSION, QloraMagicsBase, friendly, parse_args, parse_yaml_body
from .flags import options_doc


def _live_view(session, cfg: TrainConfig, quiet: bool):
    """The dashboard in a kernel, a text line elsewhere (see :func:`qlora_nb.views.live.watch`), or nothing."""
    import contextlib

    if quiet:
        return contextlib.nullcontext()
    from ..views.live import watch

    return watch(session, cfg)


@magics_class
class TrainMagics(QloraMagicsBase):
    @magic_arguments()
    @argument("--session", default=DEFAULT_SESSION, help="Session variable to train (default: qlora).")
    @argument("-o", "--output", dest="output", default="train_result",
              help="Bind the TrainResult to this variable (default: train_result).")
    @argument("--resume", action="store_true", help="Continue from the last checkpoint in output_dir.")
    @argument("--quiet", action="store_true", help="No dashboard or progress lines.")
    @options_doc(TrainConfig, "Options (one `name: value` per line of the body; aliases after the name):")
    @argument("--force", action="store_true", help="Bind the result even over a Session, your own variable or "
                                                   "a builtin of that name.")
    @cell_magic
    @friendly("qlora_train")
    def qlora_train(self, line: str = "", cell: str = ""):
        """Train the session's active LoRA adapter; the cell body is YAML, e.g. ``data: train.jsonl``.

        ``$name`` values come from the notebook (e.g. ``data: $df``).
        Python twin: ``session.train(data=..., **options)``.
        """
        args = parse_args(self.qlora_train, line, "qlora_train", self.ns)
        options = self.resolve_values(parse_yaml_body(cell, "qlora_train"), "%%qlora_train")
        if args.resume:
            options["resume"] = True
        cfg = TrainConfig.from_options(options)  # unknown keys / bad values fail before anything heavy
        self.check_bind(args.output, "TrainResult", flag="-o", force=args.force)
        session = self.session(args.session)
        with _live_view(session, cfg, args.quiet):
            result = session.train(**options)
        self.bind(args.output, result, flag="-o", force=args.force)
        if result.note:  # a second interrupt: which checkpoint exists and how to continue
            print(result.note)
        if result.truncated_rows:  # not an error, but the user must know how much text was cut
            rows = result.metrics.get("train_rows", 0) + result.metrics.get("val_rows", 0)
            print(f"note: {result.truncated_rows} of {rows} rows were longer than cutoff_len={cfg.cutoff_len} "
                  "tokens and were truncated (raise cutoff_len to keep them whole).")
