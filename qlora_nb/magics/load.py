"""%qlora_load, %qlora_load_adapter, %qlora_ledger and %qlora_unload."""

from __future__ import annotations

from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from ..config import SESSION_NAME, LoadConfig
from .base import QloraMagicsBase, display, friendly, parse_args
from .flags import option_flags, options_from_args, output_flag, shared_flags


@magics_class
class LoadMagics(QloraMagicsBase):
    @magic_arguments()
    @argument("model", nargs="?", default=None, help="Alias (smollm2-135m), local HF folder, .gguf file or hub id.")
    @argument("--name", default=SESSION_NAME, help=f"Variable the Session is bound to (default: {SESSION_NAME}).")
    @shared_flags("quiet", "force")
    @option_flags(LoadConfig, "load options (also keyword arguments of qlora_nb.load)", exclude=("model",))
    @line_magic
    @friendly("qlora_load")
    def qlora_load(self, line: str = ""):
        """Load MODEL quantized (NF4 + double quantization by default), attach LoRA, show the breakdown."""
        from ..engine.session import load

        args = parse_args(self.qlora_load, line, "qlora_load", self.ns)
        options = options_from_args(args, LoadConfig)
        LoadConfig.from_options(options)  # validate flags before any heavy import
        self.check_bind(args.name, "Session", flag="--name", force=args.force, replaces_session=True)
        session = load(**options)
        self.bind(args.name, session, flag="--name", force=args.force)
        if not args.quiet:
            self._show_breakdown(session)

    def _show_breakdown(self, session) -> None:
        from ..views.breakdown import BreakdownWidget

        display(BreakdownWidget.for_session(session))

    @magic_arguments()
    @argument("directory", help="Folder written by %%qlora_save / Session.save (adapter_config.json + safetensors).")
    @argument("--name", default=None, help="Adapter name in the session (default: the folder name).")
    @shared_flags("session")
    @option_flags(LoadConfig, None, only=("allow_pickle",))
    @line_magic
    @friendly("qlora_load_adapter")
    def qlora_load_adapter(self, line: str = ""):
        """Load a saved adapter into the session under a name (compare with %qlora_compare --adapters)."""
        args = parse_args(self.qlora_load_adapter, line, "qlora_load_adapter", self.ns)
        session = self.session(args.session)
        name = session.load_adapter(args.directory, name=args.name, allow_pickle=bool(args.allow_pickle))
        print(f"adapter {name!r} loaded from {args.directory}; adapters: {', '.join(session.adapters)}")

    @magic_arguments()
    @shared_flags("session", "force")
    @output_flag("Ledger")
    @line_magic
    @friendly("qlora_ledger")
    def qlora_ledger(self, line: str = ""):
        """Show the memory ledger (bytes by component) of a session."""
        args = parse_args(self.qlora_ledger, line, "qlora_ledger", self.ns)
        session = self.session(args.session)
        if args.output:
            self.check_bind(args.output, "Ledger", flag="-o", force=args.force)
            self.bind(args.output, session.ledger(), flag="-o", force=args.force)
        self._show_breakdown(session)

    @magic_arguments()
    @shared_flags("session")
    @line_magic
    @friendly("qlora_unload")
    def qlora_unload(self, line: str = ""):
        """Free the session's model: drop references (also in Out/_ and the last traceback), gc, empty caches."""
        from .unload import unload_from_shell

        args = parse_args(self.qlora_unload, line, "qlora_unload", self.ns)
        session = self.session(args.session)
        report = unload_from_shell(self.shell, args.session, session)
        print(report)
