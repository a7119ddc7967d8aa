"""Adapters that really change outputs, for tests: a fresh LoRA B is zero, so the adapter would equal the base."""

from __future__ import annotations


def perturb(session, adapter: str | None = "default", std: float = 0.5, seed: int = 0) -> None:
    """Fill adapter ``adapter``'s B matrices (``None``: every adapter's) with seeded noise of scale ``std``."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in session.model.named_parameters():
            if "lora_B" in n and (adapter is None or f".{adapter}." in n):
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def add_adapter(session, name: str, seed: int = 1) -> None:
    """A second adapter, named ``name``, with the session's LoRA settings, perturbed."""
    from qlora_nb.engine.model.quantize import lora_config

    session.model.add_adapter(name, lora_config(session.config))
    session.adapters[name] = {"source": "test"}
    perturb(session, name, seed=seed)
