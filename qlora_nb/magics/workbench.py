"""``%qlora_studio`` and ``%qlora_playground``: show the workbench widgets for a session (thin, like every magic).

Python twins: ``qlora_nb.studio(session)`` and ``qlora_nb.playground(session)``.
"""

from __future__ import annotations

from IPython.core.magic import line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments

from ..command_options import PlaygroundOptions
from ..errors import QloraError
from .base import QloraMagicsBase, display, friendly, parse_args
from .flags import option_flags, options_from_args, output_flag, shared_flags


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

        args = parse_args(self.qlora_studio, line, "qlora_studio", self.ns, flag_values_only=True)
        session = self.session(args.session)
        data = (args.data or "").strip("'\"")
        studio = Studio(session, data=data or None, session_name=args.session, user_ns=self.shell.user_ns)
        self.bind(args.output, studio)
        display(studio)

    @magic_arguments()
    @argument("prompt", nargs="*", help="A first prompt (or message) to show in the box (optional).")
    @shared_flags("session")
    @output_flag("Playground", "playground")
    @argument("--chat", action="store_true", help="Multi-turn chat through the tokenizer's chat template (the "
              "default when the tokenizer has one and no plain prompt template was trained).")
    @argument("--completion", action="store_true", help="Single prompts continued as written (or as training "
              "formatted them).")
    @option_flags(PlaygroundOptions, "playground options (also keyword arguments of qlora_nb.playground)")
    @line_magic
    @no_var_expand
    @friendly("qlora_playground")
    def qlora_playground(self, line: str = ""):
        """Type a prompt (or chat) and watch the base and every adapter answer side by side, token by token."""
        from ..views.chat import make_playground

        args = parse_args(self.qlora_playground, line, "qlora_playground", self.ns, flag_values_only=True)
        opts = PlaygroundOptions.from_options(options_from_args(args, PlaygroundOptions))
        if args.chat and args.completion:
            raise QloraError("--chat and --completion exclude each other.", where="%qlora_playground",
                             hint="Give one of them (or neither: chat when the tokenizer has a chat template).")
        session = self.session(args.session)
        if opts.gguf is not None:
            print(session.attach_gguf(opts.gguf, engine=opts.engine).describe())
        prompt = " ".join(args.prompt).strip()
        if len(prompt) >= 2 and prompt[0] == prompt[-1] and prompt[0] in "'\"":
            prompt = prompt[1:-1]
        chat = True if args.chat else False if args.completion else None
        pg = make_playground(session, prompt=prompt, chat=chat, history=opts.history, session_name=args.session)
        if args.output:
            self.bind(args.output, pg)
        display(pg)
