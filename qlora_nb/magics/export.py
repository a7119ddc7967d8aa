"""%qlora_save, %qlora_merge and %qlora_export: thin wrappers over Session.save / merge / export.

Their flags are generated from :class:`~qlora_nb.command_options.SaveOptions`, ``MergeOptions`` and ``ExportOptions``.
"""

from __future__ import annotations

from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from ..command_options import ExportOptions, MergeOptions, SaveOptions
from .base import QloraMagicsBase, display, friendly, parse_args
from .flags import option_flags, options_from_args, output_flag, shared_flags


@magics_class
class ExportMagics(QloraMagicsBase):
    @magic_arguments()
    @argument("directory", help="Folder to write (adapter_config.json + adapter_model.safetensors + model card).")
    @shared_flags("session")
    @option_flags(SaveOptions, "save options (also keyword arguments of Session.save)")
    @line_magic
    @friendly("qlora_save")
    def qlora_save(self, line: str = ""):
        """Save an adapter as a standard PEFT folder (plain peft loads it) plus qlora_nb.json and a model card."""
        args = parse_args(self.qlora_save, line, "qlora_save", self.ns)
        opts = SaveOptions.from_options(options_from_args(args, SaveOptions))
        session = self.session(args.session)
        from ..engine.export.export import saved_summary

        out = session.save(args.directory, overwrite=opts.overwrite, adapter=opts.adapter, format=opts.format)
        name = opts.adapter or session.active_adapter
        if opts.format == "gguf":
            from ..engine.export.gguf_lora import lora_summary

            print(lora_summary(out, name))
        else:
            print(saved_summary(out, name))

    @magic_arguments()
    @argument("directory", help="Folder for the merged model (safetensors + config + tokenizer), or for the "
                                ".gguf file (and Modelfile) with --format gguf/ollama.")
    @shared_flags("session", "force")
    @output_flag("MergeResult (GGUFResult with --format gguf/ollama)")
    @option_flags(MergeOptions, "merge options (also keyword arguments of Session.merge)")
    @line_magic
    @friendly("qlora_merge")
    def qlora_merge(self, line: str = ""):
        """Merge an adapter into a 16/32-bit copy of the base, after a memory check, and verify the result."""
        args = parse_args(self.qlora_merge, line, "qlora_merge", self.ns)
        opts = MergeOptions.from_options(options_from_args(args, MergeOptions))  # bad flags fail first
        gguf: dict = {}
        if opts.format != "hf":
            from ..engine.export.gguf_write import normalize_outtype

            gguf = {"format": opts.format}
            if opts.outtype is not None:
                gguf["outtype"] = normalize_outtype(opts.outtype)
        if opts.base_only:  # refused by the engine for an HF merge, and with --adapter
            gguf["base_only"] = True
        session = self.session(args.session)
        if args.output:
            self.check_bind(args.output, "GGUFResult" if gguf else "MergeResult", flag="-o", force=args.force)
        result = session.merge(args.directory, dtype=opts.dtype, overwrite=opts.overwrite, verify=opts.verify,
                               adapter=opts.adapter, verbose=True, **gguf)
        if args.output:
            self.bind(args.output, result, flag="-o", force=args.force)

    @magic_arguments()
    @argument("directory", help="Folder for train.py, its config, accelerate configs and a README.")
    @shared_flags("session")
    @option_flags(ExportOptions, "export options (also keyword arguments of Session.export)")
    @line_magic
    @friendly("qlora_export")
    def qlora_export(self, line: str = ""):
        """Export this session's run as a standalone train.py + config for `accelerate launch` (DDP or FSDP-QLoRA)."""
        args = parse_args(self.qlora_export, line, "qlora_export", self.ns)
        options = options_from_args(args, ExportOptions)  # `$name` data was resolved to text by parse_args
        ExportOptions.from_options(options)
        session = self.session(args.session)
        out = session.export(args.directory, **options)
        from IPython.display import Markdown

        display(Markdown((out / "README.md").read_text(encoding="utf-8")))
