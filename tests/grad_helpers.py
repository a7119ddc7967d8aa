"""Test helpers for gradient checks through the 4-bit weights (shared by foundation and compare tests)."""

from __future__ import annotations


def lora_params(session):
    return {n: p for n, p in session.model.named_parameters() if p.requires_grad}


def grads_after_one_step(session, ids):
    """LoRA gradients of one training forward/backward on ``ids`` (None where no gradient arrived)."""
    model = session.model
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    return {n: p.grad.detach().clone() if p.grad is not None else None for n, p in lora_params(session).items()}
