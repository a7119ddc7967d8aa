"""The parameter and memory breakdown widget (reads a Ledger; updates live from events)."""

from __future__ import annotations

import traitlets

from .base import QloraWidget, asset, esm


class BreakdownWidget(QloraWidget):
    """Parameter counts, LoRA cost per matrix type, stacked memory bar, bits/param, savings vs 16-bit."""

    _esm = esm("breakdown.js")
    _css = asset("qlora.css")
    ledger = traitlets.Dict().tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    config = traitlets.Dict().tag(sync=True)

    def __init__(self, ledger=None, **kwargs):
        super().__init__(**kwargs)
        self._ledger_obj = None
        if ledger is not None:
            self.update_ledger(ledger)

    @classmethod
    def for_session(cls, session, subscribe: bool = True) -> BreakdownWidget:
        cfg = session.config
        title = f"{cfg.model} · {cfg.bits}-bit" + (f" {cfg.quant.upper()}" + (" + DQ" if cfg.double_quant else "")
                                                    if cfg.bits == 4 else "")
        w = cls(session.ledger(), title=title,
                config={"r": cfg.r, "alpha": cfg.alpha, "bits": cfg.bits, "quant": cfg.quant,
                        "double_quant": cfg.double_quant, "targets": cfg.targets})
        if subscribe:
            w._unsubscribe = session.events.subscribe(w.on_event)
        return w

    def on_event(self, event: dict) -> None:
        if event.get("kind") == "ledger" and "ledger" in event:
            self.ledger = event["ledger"]

    def update_ledger(self, ledger) -> None:
        self._ledger_obj = ledger
        self.ledger = ledger.to_event()

    def text(self) -> str:
        head = self.title + "\n" if self.title else ""
        return head + (str(self._ledger_obj) if self._ledger_obj is not None else "(no ledger)")
