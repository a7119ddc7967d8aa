"""``%qlora_launch`` / ``%%qlora_launch``: the session's run on N processes (``Session.launch``), watched live."""

from __future__ import annotations

from IPython.core.magic import line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from ..config import TrainConfig
from .base import DEFAULT_SESSION, QloraMagicsBase, friendly, parse_args, parse_yaml_body


@magics_class
class LaunchMagics(QloraMagicsBase):
    @magic_arguments()
    @argument("--processes", type=int, default=2, help="Ranks to start, one per GPU (on the CPU: per core).")
    @argument("--fsdp", action="store_true", help="Shard the model (FSDP) instead of replicating it (DDP).")
    @argument("--cpu-offload", dest="cpu_offload", action="store_true",
              help="With --fsdp: keep the shards in host RAM.")
    @argument("--port", type=int, default=None, help="Rendezvous port (default: a free one).")
    @argument("--directory", default=None, help="Job folder (default: runs/launch-<time>).")
    @argument("--overwrite", action="store_true", help="Replace a non-empty job folder.")
    @argument("--session", default=DEFAULT_SESSION, help="Session variable (default: qlora).")
    @argument("-o", "--output", dest="output", default="launch_result",
              help="Bind the LaunchResult to this variable (default: launch_result).")
    @argument("--quiet", action="store_true", help="No dashboard or progress lines.")
    @argument("--force", action="store_true", help="Bind the result even over a Session, your own variable or "
                                                   "a builtin of that name.")
    @line_cell_magic
    @friendly("qlora_launch")
    def qlora_launch(self, line: str = "", cell: str | None = None):
        """Train on N processes with ``accelerate launch``; the body (optional) is the same YAML as %%qlora_train.

        Without a body it reruns the last run's settings. Rank 0's loss streams into the dashboard; Stop (or an
        interrupt) stops every rank at a step boundary with one checkpoint; at the end the adapter is loaded into
        the session. Python twin: ``session.launch(processes, fsdp=..., cpu_offload=..., **options)``.
        """
        args = parse_args(self.qlora_launch, line, "qlora_launch", self.ns)
        options = self.resolve_values(parse_yaml_body(cell or "", "qlora_launch"), "%%qlora_launch")
        self.check_bind(args.output, "LaunchResult", flag="-o", force=args.force)
        session = self.session(args.session)
        from ..engine.launch import check_launch

        check_launch(session, args.processes, args.fsdp, args.cpu_offload)  # before the body is checked
        last = session.runs[-1].config if session.runs else {}
        # the run's settings: the last run's with the body on top; unknown keys / bad values fail here
        cfg = TrainConfig.from_options({**{k: v for k, v in dict(last or {}).items()
                                           if k not in ("output_dir", "resume", "overwrite")}, **options})
        import contextlib

        from ..views.live import watch

        view = contextlib.nullcontext() if args.quiet else watch(session, cfg)
        extra = {k: v for k, v in (("port", args.port), ("directory", args.directory)) if v is not None}
        with view:
            result = session.launch(args.processes, fsdp=args.fsdp, cpu_offload=args.cpu_offload,
                                    overwrite=args.overwrite, **extra, **options)
        self.bind(args.output, result, flag="-o", force=args.force)
        return None
