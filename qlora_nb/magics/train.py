"""``%%qlora_train``: a YAML cell body of TrainConfig options → ``Session.train`` with a live view."""

from __future__ import annotations

from IPython.core.magic import cell_magic, magics_class
from IPython.core.magic_arguments import magic_arguments

from ..config import TRAIN_RESULT_NAME, TrainConfig
from .base import QloraMagicsBase, friendly, parse_args, parse_yaml_body
from .flags import option_flags, options_doc, output_flag, shared_flags


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
    @shared_flags("session", "quiet", "force")
    @output_flag("TrainResult", TRAIN_RESULT_NAME)
    @option_flags(TrainConfig, None, only=("resume",))
    @options_doc(TrainConfig, "Options (one `name: value` per line of the body; aliases after the name):")
    @cell_magic
    @friendly("qlora_train")
    def qlora_train(self, line: str = "", cell: str = ""):
        """Train the session's active LoRA adapter; the cell body is YAML, e.g. ``data: train.jsonl``.

        ``$name`` values come from the notebook (e.g. ``data: $df``).
        Python twin: ``session.train(data=..., **options)``.
        """
        args = parse_args(self.qlora_train, line, "qlora_train", self.ns)
        options = self.resolve_values(parse_yaml_body(cell, "qlora_train"), "%%qlora_train")
        if args.resume is not None:  # --resume / --no-resume on the line win over the body
            options["resume"] = args.resume
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
