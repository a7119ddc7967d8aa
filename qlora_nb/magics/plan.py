"""%qlora_plan (will it fit?) and %qlora_quant_report (how much does 4-bit cost?)."""

from __future__ import annotations

from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from ..command_options import QuantReportOptions
from ..config import PlanConfig
from .base import QloraMagicsBase, display, friendly, parse_args
from .flags import option_flags, options_from_args, output_flag, shared_flags


@magics_class
class PlanMagics(QloraMagicsBase):
    @magic_arguments()
    @argument("model", nargs="?", default=None,
              help="Table name (llama-2-7b, qwen2.5-7b…), config.json/model folder or hub id (config only). "
                   "Omit to plan the loaded session, next to its measured ledger.")
    @shared_flags("session", "force")
    @argument("--text", action="store_true", help="Print the plan as text instead of the widget.")
    @argument("--measure", action="store_true",
              help="Also run a few real steps of each setup that fits (on throwaway copies; the session is left "
                   "exactly as it was) and show measured beside predicted seconds per step.")
    @argument("--gpu-model", dest="gpu_model", default=None,
              help="Price time for this GPU (T4, L4, A10, A100, H100…) from its published peak (estimated).")
    @output_flag("Plan")
    @option_flags(PlanConfig, "plan options (also keyword arguments of qlora_nb.plan)", exclude=("model",))
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
            from ..engine.forecast.plan import plan
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
    @shared_flags("session", "force")
    @output_flag("QuantReport")
    @option_flags(QuantReportOptions, "report options (also keyword arguments of Session.quant_report)")
    @line_magic
    @friendly("qlora_quant_report")
    def qlora_quant_report(self, line: str = ""):
        """NF4 vs FP4 vs Int4 reconstruction error per layer, and 4-bit vs 16-bit perplexity, as plots."""
        args = parse_args(self.qlora_quant_report, line, "qlora_quant_report", self.ns)
        opts = QuantReportOptions.from_options(options_from_args(args, QuantReportOptions))  # bad flags fail first
        session = self.session(args.session)
        if args.output:
            self.check_bind(args.output, "QuantReport", flag="-o", force=args.force)
        report = session.quant_report(sample=opts.sample, max_tokens=opts.max_tokens, perplexity_check=opts.perplexity)
        if args.output:
            self.bind(args.output, report, flag="-o", force=args.force)
        print(report)
        from ..views.quant_report import report_figures

        for fig in report_figures(report).values():
            display(fig)
