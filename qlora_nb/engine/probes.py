"""Probe generations during training: the same prompts from the base and the adapter at each evaluation."""

from __future__ import annotations

from .adapters import BASE, with_adapter


def generate_batch(session, prompts: list[str], max_new_tokens: int = 48, base: bool = False) -> list[str]:
    """Greedy completions for ``prompts`` (batched, left-padded), with the active adapter or the base.

    Used for the dashboard's probes and the demo's exact match; :mod:`.generate`
    owns the streaming, seeded generation of ``%qlora_compare``.
    """
    import torch

    model, tok = session.model, session.tokenizer
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        with with_adapter(model, BASE if base else None):
            enc = tok(list(prompts), return_tensors="pt", padding=True).to(session.device)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                                     pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        return [tok.decode(row, skip_special_tokens=True) for row in new]
    finally:
        tok.padding_side = side
