"""The parameter and memory breakdown widget: a snapshot of a Ledger, labelled "as of …".

``%qlora_load`` shows the ledger at load time; training's ledger events used to rewrite it later,
so two widgets on the page disagreed. It is now a frozen snapshot unless ``subscribe=True``, which
shows a visible "live" badge instead.
"""

from __future__ import annotations

import time

import traitlets

from .base import QloraWidget, asset, esm


class BreakdownWidget(QloraWidget):
    """Parameter counts, LoRA cost per matrix type, stacked memory bar, bits/param, savings vs 16-bit."""

    _esm = esm("breakdown.js")
    SESSION_FREE = ("for_session", "on_event", "update_ledger")  # shows a ledger; holds no session
    _css = asset("qlora.css")
    ledger = traitlets.Dict().tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    config = traitlets.Dict().tag(sync=True)
    as_of = traitlets.Unicode("").tag(sync=True)  # "as of 14:02:11 (load)", or "live" when following events

    def __init__(self, ledger=None, **kwargs):
        super().__init__(**kwargs)
        self._ledger_obj = None
        if ledger is not None:
            self.update_ledger(ledger)

    @classmethod
    def for_session(cls, session, subscribe: bool = False, when: str = "load") -> BreakdownWidget:
        cfg = session.config
        title = f"{cfg.model} · {cfg.bits}-bit" + (f" {cfg.quant.upper()}" + (" + DQ" if cfg.double_quant else "")
                                                    if cfg.bits == 4 else "")
        w = cls(session.ledger(), title=title,
                config={"r": cfg.r, "alpha": cfg.alpha, "bits": cfg.bits, "quant": cfg.quant,
                        "double_quant": cfg.double_quant, "targets": cfg.targets})
        if subscribe:
            w._unsubscribe = session.events.subscribe(w.on_event)
            w.as_of = "live"
        else:
            w.as_of = f"as of {time.strftime('%H:%M:%S')} ({when})"
        return w

    def on_event(self, event: dict) -> None:
        if event.get("kind") == "ledger" and "ledger" in event:
            self.ledger = event["ledger"]

    def update_ledger(self, ledger) -> None:
        self._ledger_obj = ledger
        self.ledger = ledger.to_event()

    def text(self) -> str:
        head = self.title + (f" ({self.as_of})" if self.as_of else "") + "\n" if self.title else ""
        return head + (str(self._ledger_obj) if self._ledger_obj is not None else "(no ledger)")
