"""Probe generations during training: the same prompts from the base and the adapter at each evaluation."""

from __future__ import annotations

from collections.abc import Callable

from ..model.adapters import BASE, with_adapter


def generate_batch(session, prompts: list[str], max_new_tokens: int = 48, base: bool = False) -> list[str]:
    """Greedy completions for ``prompts`` (batched, left-padded), with the active adapter or the base.

    Used for the dashboard's probes and the demo's exact match; :mod:`.generate`
    owns the streaming, seeded generation of ``%qlora_compare``.
    """
    return generate_probes(session, prompts, max_new_tokens, base)[0]


def generate_probes(session, prompts: list[str], max_new_tokens: int = 48, base: bool = False,
                    should_stop: Callable[[], bool] | None = None) -> tuple[list[str], list[bool]]:
    """(completions, truncated): ``truncated[i]`` is True when output ``i`` stopped at ``max_new_tokens``, not EOS.

    The dashboard marks such an output "cut at N tokens", so a half sentence is
    not mistaken for what the model chose to say. With batched greedy decoding a
    finished row is padded after its EOS, so a row was cut exactly when the batch
    ran the full ``max_new_tokens`` and the row holds no EOS. ``should_stop()`` true (a Stop or an interrupt
    during training) ends the generation at the next token: the outputs so far are returned.
    """
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), bool(should_stop()), dtype=torch.bool, device=input_ids.device)

    model, tok = session.model, session.tokenizer
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        with with_adapter(model, BASE if base else None):
            enc = tok(list(prompts), return_tensors="pt", padding=True).to(session.device)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                                     pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                     stopping_criteria=StoppingCriteriaList([_Stop()]) if should_stop else None)
        new = out[:, enc["input_ids"].shape[1]:]
        full = new.shape[1] >= max_new_tokens
        cut = [bool(full and (tok.eos_token_id is None or not (row == tok.eos_token_id).any().item())) for row in new]
        return [tok.decode(row, skip_special_tokens=True) for row in new], cut
    finally:
        tok.padding_side = side


def probe_input(template, row) -> str:
    """The user's part of a held-out row's prompt (its fields, without the template's text) for the probe table.

    The dashboard folds a template shared by several probes itself (as the
    compare widget does); this is what it shows when one probe leaves nothing
    to fold. Chat rows show their last user message.
    """
    messages = row.get("messages")
    if isinstance(messages, list):
        users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        if users:
            return str(users[-1])
    fields = [f for f in getattr(template, "prompt_fields", []) if str(row.get(f) or "").strip()]
    if len(fields) == 1:
        return str(row[fields[0]])
    return "\n".join(f"{f}: {row[f]}" for f in fields)
