"""Test helpers for gradient checks through the 4-bit weights (shared by foundation and compare tests)."""

from __future__ import annotations


def lora_params(session):
    return {n: p for n, p in session.model.named_parameters() if p.requires_grad}


def loss_and_grads(session, loss_fn):
    """``loss_fn()`` in training mode, backpropagated: its value and the LoRA gradients (None where none arrived)."""
    model = session.model
    model.train()
    model.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    grads = {n: p.grad.detach().clone() if p.grad is not None else None for n, p in lora_params(session).items()}
    return loss.detach(), grads


def grads_after_one_step(session, ids):
    """LoRA gradients of one training forward/backward on ``ids`` (None where no gradient arrived)."""
    return loss_and_grads(session, lambda: session.model(input_ids=ids, labels=ids).loss)[1]
