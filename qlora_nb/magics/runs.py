"""``%qlora_runs``: the run history of a folder (thin: :func:`qlora_nb.engine.runs.list_runs` + the runs view).

Python twin: ``qlora_nb.runs(folder)`` (and ``qlora_nb.runs_view`` for the widget).
"""

from __future__ import annotations

from IPython.core.magic import line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments

from .base import DEFAULT_SESSION, QloraMagicsBase, display, friendly, parse_args


@magics_class
class RunsMagics(QloraMagicsBase):
    @magic_arguments()
    @argument("folder", nargs="?", default="runs", help="Folder holding the run folders (default: runs).")
    @argument("--compare", default=None, help="Two or more run names, comma-separated: show them side by side.")
    @argument("--session", default=DEFAULT_SESSION, help="Session that 'load adapter' loads into (default: qlora).")
    @argument("-o", dest="output", default="runs", help="Bind the runs (or the comparison) to this name.")
    @line_magic
    @no_var_expand
    @friendly("qlora_runs")
    def qlora_runs(self, line: str = ""):
        """Every run written under FOLDER, read from disk: a fresh kernel lists yesterday's runs.

        Each row: name, date, model, data (+ fingerprint), options that differ from the defaults, steps, final
        train/eval loss, task metric, tokens/s, peak memory, duration, adapter and checkpoint. Select runs in
        the widget to overlay their curves and see their configs side by side; load an adapter from a row.
        """
        from ..engine.runs import list_runs
        from ..textsplit import split_list

        args = parse_args(self.qlora_runs, line, "qlora_runs", self.ns)
        runs = list_runs(args.folder)
        if args.compare:
            names = split_list(args.compare, "--compare")
            result = runs.compare(*names)
            self.bind(args.output, result)
            display(result)
            return
        from ..engine.session import Session
        from ..views.runs import RunsView

        session = self.ns.get(args.session)
        view = RunsView(runs, session=session if isinstance(session, Session) else None,
                        session_name=args.session)
        self.bind(args.output, runs)
        display(view)
