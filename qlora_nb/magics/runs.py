"""``%qlora_runs``: the run history of a folder (thin: :func:`qlora_nb.engine.training.runs.list_runs` + the runs view).

Python twin: ``qlora_nb.runs(folder)`` (and ``qlora_nb.runs_view`` for the widget).
"""

from __future__ import annotations

from IPython.core.magic import line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments

from .base import QloraMagicsBase, display, friendly, parse_args
from .flags import output_flag, shared_flags


@magics_class
class RunsMagics(QloraMagicsBase):
    @magic_arguments()
    @argument("folder", nargs="?", default="runs", help="Folder holding the run folders (default: runs).")
    @argument("--compare", default=None, help="Two or more run names, comma-separated: show them side by side.")
    @shared_flags("session", "force")
    @output_flag("Runs (RunComparison with --compare)", "runs")
    @line_magic
    @no_var_expand
    @friendly("qlora_runs")
    def qlora_runs(self, line: str = ""):
        """Every run written under FOLDER, read from disk: a fresh kernel lists yesterday's runs.

        Each row: name, date, model, data (+ fingerprint), options that differ from the defaults, steps, final
        train/eval loss, task metric, tokens/s, peak memory, duration, adapter and checkpoint. Select runs in
        the widget to overlay their curves and see their configs side by side; load an adapter from a row.
        """
        from ..engine.training.runs import list_runs
        from ..textsplit import split_list

        args = parse_args(self.qlora_runs, line, "qlora_runs", self.ns)
        if args.output:
            self.check_bind(args.output, "Runs", flag="-o", force=args.force)
        runs = list_runs(args.folder)
        if args.compare:
            names = split_list(args.compare, "--compare")
            result = runs.compare(*names)
            if args.output:
                self.bind(args.output, result, flag="-o", force=args.force)
            display(result)
            return
        from ..engine.session import Session
        from ..views.runs import RunsView

        session = self.ns.get(args.session)
        view = RunsView(runs, session=session if isinstance(session, Session) else None,
                        session_name=args.session)
        if args.output:
            self.bind(args.output, runs, flag="-o", force=args.force)
        display(view)
