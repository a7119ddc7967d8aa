"""%qlora_plan (will it fit?) and %qlora_quant_report (how much does 4-bit cost?)."""

from __future__ import annotations

from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from ..config import PlanConfig, QuantReportOptions
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
    @output_flag("Plan")
    @option_flags(PlanConfig, "plan options (also keyword arguments of qlora_nb.plan)", exclude=("model",))
    @line_magic
    @friendly("qlora_plan")
    def qlora_plan(self, line: str = ""):
        """Predict training memory by component and say whether it fits (the Python twin is qlora_nb.plan)."""
        args = parse_args(self.qlora_plan, line, "qlora_plan", self.ns)
        options = options_from_args(args, PlanConfig, exclude=("model",))
        if args.output:
            self.check_bind(args.output, "Plan", flag="-o", force=args.force)
        if args.model is None:
            from ..engine.planning import plan_session

            result = plan_session(self.session(args.session), **options)
        else:
            from ..memory.planner import plan

            PlanConfig.from_options(options)  # flag errors before anything is resolved
            result = plan(args.model, **options)
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
