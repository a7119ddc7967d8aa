"""%qlora_plan (will it fit?) and %qlora_quant_report (how much does 4-bit cost?)."""

from __future__ import annotations

from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from ..config import PlanConfig
from .base import DEFAULT_SESSION, QloraMagicsBase, display, friendly, parse_args
from .flags import option_flags, options_from_args


@magics_class
class PlanMagics(QloraMagicsBase):
    @magic_arguments()
    @argument("model", nargs="?", default=None,
              help="Table name (llama-2-7b, qwen2.5-7b…), config.json/model folder or hub id (config only). "
                   "Omit to plan the loaded session, next to its measured ledger.")
    @argument("--session", default=DEFAULT_SESSION, help="Session to plan when no MODEL is given (default: qlora).")
    @argument("--text", action="store_true", help="Print the plan as text instead of the widget.")
    @argument("--measure", action="store_true",
              help="Also run a few real steps of each setup that fits (on throwaway copies; the session is left "
                   "exactly as it was) and show measured beside predicted seconds per step.")
    @argument("--gpu-model", dest="gpu_model", default=None,
              help="Price time for this GPU (T4, L4, A10, A100, H100…) from its published peak (estimated).")
    @argument("-o", dest="output", default=None, help="Bind the Plan to this variable.")
    @option_flags(PlanConfig, "plan options (also keyword arguments of qlora_nb.plan)", exclude=("model",))
    @argument("--force", action="store_true", help="Bind the result even over a Session, your own variable or "
                                                   "a builtin of that name.")
    @line_magic
    @friendly("qlora_plan")
    def qlora_plan(self, line: str = ""):
        """Predict training memory by component and time per step, say whether it fits and which setup is fastest
        (the Python twins are qlora_nb.plan and Session.plan)."""
        args = parse_args(self.qlora_plan, line, "qlora_plan", self.ns)
        options = options_from_args(args, PlanConfig, exclude=("model",))
        if args.output:
            self.check_bind(args.output, "Plan", flag="-o", force=args.force)
        if args.model is None:
            result = self.session(args.session).plan(measure=args.measure, gpu_model=args.gpu_model, **options)
        else:
            from ..engine.forecast import plan
            from ..errors import QloraError

            if args.measure:
                raise QloraError("--measure times real steps of the loaded session's model, not of a named one.",
                                 where="%qlora_plan --measure", hint=f"Drop {args.model!r} to plan and measure the "
                                                                     f"session, or drop --measure.")
            PlanConfig.from_options(options)  # flag errors before anything is resolved
            result = plan(args.model, gpu_model=args.gpu_model, **options)
        if args.output:
            self.bind(args.output, result, flag="-o", force=args.force)
        if args.text:
            print(result)
            return
        from ..views.planner import PlannerWidget

        display(PlannerWidget(result))

    @magic_arguments()
    @argument("--session", default=DEFAULT_SESSION, help="Session variable (default: qlora).")
    @argument("--sample", default="65536",
              help="Values per weight to quantize (whole rows); 'all' for every value (slow on CPU).")
    @argument("--max-tokens", dest="max_tokens", default="512", help="Held-out tokens for the perplexity.")
    @argument("--no-perplexity", dest="perplexity", action="store_false",
              help="Skip the 4-bit vs 16-bit perplexity (no 16-bit copy is loaded).")
    @argument("-o", dest="output", default=None, help="Bind the QuantReport to this variable.")
    @argument("--force", action="store_true", help="Bind the result even over a Session, your own variable or "
                                                   "a builtin of that name.")
    @line_magic
    @friendly("qlora_quant_report")
    def qlora_quant_report(self, line: str = ""):
        """NF4 vs FP4 vs Int4 reconstruction error per layer, and 4-bit vs 16-bit perplexity, as plots."""
        from ..errors import QloraError

        args = parse_args(self.qlora_quant_report, line, "qlora_quant_report", self.ns)
        session = self.session(args.session)
        if args.output:
            self.check_bind(args.output, "QuantReport", flag="-o", force=args.force)
        try:
            sample = None if str(args.sample).lower() in ("all", "none") else int(args.sample)
            max_tokens = int(args.max_tokens)
        except ValueError:
            raise QloraError("--sample and --max-tokens take whole numbers ('all' for --sample).",
                             where="%qlora_quant_report") from None
        if max_tokens < 2:
            raise QloraError(f"--max-tokens {max_tokens} is too small.", where="%qlora_quant_report --max-tokens",
                             hint="Use at least 2.")
        report = session.quant_report(sample=sample, max_tokens=max_tokens, perplexity_check=args.perplexity)
        if args.output:
            self.bind(args.output, report, flag="-o", force=args.force)
        print(report)
        from ..views.quant_report import report_figures

        for fig in report_figures(report).values():
            display(fig)
