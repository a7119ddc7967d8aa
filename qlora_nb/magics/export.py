"""%qlora_save, %qlora_merge and %qlora_export: thin wrappers over Session.save / merge / export."""

from __future__ import annotations

from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from .base import DEFAULT_SESSION, QloraMagicsBase, display, friendly, parse_args


@magics_class
class ExportMagics(QloraMagicsBase):
    @magic_arguments()
    @argument("directory", help="Folder to write (adapter_config.json + adapter_model.safetensors + model card).")
    @argument("--overwrite", action="store_true", help="Replace a non-empty folder.")
    @argument("--adapter", default=None, help="Adapter to save (default: the active one).")
    @argument("--format", default="peft", help="peft (default: a PEFT folder) or gguf (a GGUF LoRA file for "
                                               "llama.cpp --lora and Ollama's ADAPTER).")
    @argument("--session", default=DEFAULT_SESSION, help="Session variable (default: qlora).")
    @line_magic
    @friendly("qlora_save")
    def qlora_save(self, line: str = ""):
        """Save an adapter as a standard PEFT folder (plain peft loads it) plus qlora_nb.json and a model card."""
        args = parse_args(self.qlora_save, line, "qlora_save", self.ns)
        session = self.session(args.session)
        from ..engine.export import saved_summary

        out = session.save(args.directory, overwrite=args.overwrite, adapter=args.adapter, format=args.format)
        name = args.adapter or session.active_adapter
        if str(args.format).strip().lower() == "gguf":
            from ..engine.gguf_lora import lora_summary

            print(lora_summary(out, name))
        else:
            print(saved_summary(out, name))

    @magic_arguments()
    @argument("directory", help="Folder for the merged model (safetensors + config + tokenizer).")
    @argument("--dtype", default="bf16", help="bf16 (default), fp16 or fp32 (exact).")
    @argument("--overwrite", action="store_true", help="Replace a non-empty folder.")
    @argument("--no-verify", dest="verify", action="store_false",
              help="Skip reloading the merged model and comparing weights and logits.")
    @argument("--adapter", default=None, help="Adapter to merge (default: the active one).")
    @argument("--format", default="hf", help="hf (default: a Hugging Face folder), gguf (one llama.cpp file) or "
                                             "ollama (the GGUF plus a Modelfile with the chat TEMPLATE and stops).")
    @argument("--outtype", default=None, help="GGUF type: q8_0 (default, the smallest written without llama.cpp), "
                                              "f16, bf16 or f32. K-quants (Q4_K_M, ...) need llama-quantize: export "
                                              "f16, then `llama-quantize IN-f16.gguf OUT-Q4_K_M.gguf Q4_K_M`, or "
                                              "`ollama create NAME --quantize q4_K_M -f DIR/Modelfile`.")
    @argument("--session", default=DEFAULT_SESSION, help="Session variable (default: qlora).")
    @argument("-o", dest="output", default=None, help="Bind the MergeResult (GGUFResult) to this variable.")
    @argument("--force", action="store_true", help="Bind the result even over a Session, your own variable or "
                                                   "a builtin of that name.")
    @line_magic
    @friendly("qlora_merge")
    def qlora_merge(self, line: str = ""):
        """Merge an adapter into a 16/32-bit copy of the base, after a memory check, and verify the result."""
        from ..engine.gguf_export import normalize_format
        from ..engine.gguf_write import normalize_outtype
        from ..engine.merge import normalize_dtype

        args = parse_args(self.qlora_merge, line, "qlora_merge", self.ns)
        dtype = normalize_dtype(args.dtype)  # refuse bad flags before touching the session
        fmt = normalize_format(args.format)
        gguf = {} if fmt == "hf" else {"format": fmt}
        if args.outtype is not None:
            if fmt == "hf":
                from ..errors import QloraError

                raise QloraError("--outtype applies to GGUF exports only.", where="--outtype",
                                 hint="Add --format gguf (or ollama), or use --dtype for a Hugging Face merge.")
            gguf["outtype"] = normalize_outtype(args.outtype)
        session = self.session(args.session)
        if args.output:
            self.check_bind(args.output, "GGUFResult" if gguf else "MergeResult", flag="-o", force=args.force)
        result = session.merge(args.directory, dtype=dtype, overwrite=args.overwrite, verify=args.verify,
                               adapter=args.adapter, verbose=True, **gguf)
        if args.output:
            self.bind(args.output, result, flag="-o", force=args.force)

    @magic_arguments()
    @argument("directory", help="Folder for train.py, its config, accelerate configs and a README.")
    @argument("--overwrite", action="store_true", help="Replace a non-empty folder.")
    @argument("--num-processes", dest="num_processes", default=None,
              help="Processes (GPUs) per machine written into the accelerate config (default 2).")
    @argument("--fsdp", action="store_true", help="Make the FSDP-QLoRA config the default in the README.")
    @argument("--data", default=None, help="Data file for the script (default: the last run's data file).")
    @argument("--session", default=DEFAULT_SESSION, help="Session variable (default: qlora).")
    @line_magic
    @friendly("qlora_export")
    def qlora_export(self, line: str = ""):
        """Export this session's run as a standalone train.py + config for `accelerate launch` (DDP or FSDP-QLoRA)."""
        args = parse_args(self.qlora_export, line, "qlora_export", self.ns)
        session = self.session(args.session)
        options = {"fsdp": args.fsdp}
        if args.data is not None:
            options["data"] = args.data  # `$name` was resolved to text by parse_args (objects are refused there)
        if args.num_processes is not None:
            options["num_processes"] = args.num_processes
        out = session.export(args.directory, overwrite=args.overwrite, **options)
        from IPython.display import Markdown

        display(Markdown((out / "README.md").read_text(encoding="utf-8")))
