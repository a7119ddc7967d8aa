"""``%qlora_studio`` and ``%qlora_playground``: show the workbench widgets for a session (thin, like every magic).

Python twins: ``qlora_nb.studio(session)`` and ``qlora_nb.playground(session)``.
"""

from __future__ import annotations

from IPython.core.magic import line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments

from .base import QloraMagicsBase, display, friendly, parse_args
from .flags import output_flag, shared_flags


@magics_class
class WorkbenchMagics(QloraMagicsBase):
    @magic_arguments()
    @argument("data", nargs="?", default=None, help="Data to start with: a path, 'demo' or $variable (optional).")
    @shared_flags("session")
    @output_flag("Studio", "studio")
    @line_magic
    @no_var_expand
    @friendly("qlora_studio")
    def qlora_studio(self, line: str = ""):
        """A panel to pick data and options, see the memory forecast, and Train / Stop / Resume with the mouse.

        ``studio.to_code()`` (or the panel's "Copy as cell") gives the ``%%qlora_train`` cell for the settings.
        """
        from ..views.studio import Studio

        args = parse_args(self.qlora_studio, line, "qlora_studio")
        session = self.session(args.session)
        data = (args.data or "").strip("'\"")
        studio = Studio(session, data=data or None, session_name=args.session, user_ns=self.shell.user_ns)
        self.bind(args.output, studio)
        display(studio)

    @magic_arguments()
    @argument("prompt", nargs="*", help="A first prompt to show in the box (optional).")
    @shared_flags("session")
    @output_flag("Playground", "playground")
    @line_magic
    @no_var_expand
    @friendly("qlora_playground")
    def qlora_playground(self, line: str = ""):
        """Type a prompt and watch the base and every adapter answer side by side, token by token."""
        from ..views.playground import Playground

        args = parse_args(self.qlora_playground, line, "qlora_playground")
        session = self.session(args.session)
        prompt = " ".join(args.prompt).strip()
        if len(prompt) >= 2 and prompt[0] == prompt[-1] and prompt[0] in "'\"":
            prompt = prompt[1:-1]
        pg = Playground(session, prompt=prompt)
        self.bind(args.output, pg)
        display(pg)
