"""``%qlora_launch`` / ``%%qlora_launch``: the session's run on N processes (``Session.launch``), watched live."""

from __future__ import annotations

from IPython.core.magic import line_cell_magic, magics_class
from IPython.core.magic_arguments import magic_arguments

from ..command_options import LaunchOptions
from ..config import TrainConfig
from .base import QloraMagicsBase, friendly, parse_args, parse_yaml_body
from .flags import option_flags, options_from_args, output_flag, shared_flags


@magics_class
class LaunchMagics(QloraMagicsBase):
    @magic_arguments()
    @shared_flags("session", "force", "quiet")
    @output_flag("LaunchResult", "launch_result")
    @option_flags(LaunchOptions, "launch options (also keyword arguments of Session.launch)")
    @line_cell_magic
    @friendly("qlora_launch")
    def qlora_launch(self, line: str = "", cell: str | None = None):
        """Train on N processes with ``accelerate launch``; the body (optional) is the same YAML as %%qlora_train.

        Without a body it reruns the last run's settings. Rank 0's loss streams into the dashboard; Stop (or an
        interrupt) stops every rank at a step boundary with one checkpoint; at the end the adapter is loaded into
        the session. Python twin: ``session.launch(processes, fsdp=..., cpu_offload=..., **options)``.
        """
        args = parse_args(self.qlora_launch, line, "qlora_launch", self.ns)
        opts = LaunchOptions.from_options(options_from_args(args, LaunchOptions))  # bad flags fail first
        options = self.resolve_values(parse_yaml_body(cell or "", "qlora_launch"), "%%qlora_launch")
        self.check_bind(args.output, "LaunchResult", flag="-o", force=args.force)
        session = self.session(args.session)
        from ..engine.scale.launch import check_launch

        check_launch(session, opts.processes, opts.fsdp, opts.cpu_offload)  # before the body is checked
        last = session.runs[-1].config if session.runs else {}
        # the run's settings: the last run's with the body on top; unknown keys / bad values fail here
        cfg = TrainConfig.from_options({**{k: v for k, v in dict(last or {}).items()
                                           if k not in ("output_dir", "resume", "overwrite")}, **options})
        import contextlib

        from ..views.live import watch

        view = contextlib.nullcontext() if args.quiet else watch(session, cfg)
        extra = {k: v for k, v in (("port", opts.port), ("directory", opts.directory)) if v is not None}
        with view:
            result = session.launch(opts.processes, fsdp=opts.fsdp, cpu_offload=opts.cpu_offload,
                                    overwrite=opts.overwrite, **extra, **options)
        self.bind(args.output, result, flag="-o", force=args.force)
        return None
