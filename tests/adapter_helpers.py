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


def gguf_export_of_a_changed_adapter(model_dir, folder):
    """A tiny session whose adapter changes the greedy output, and its merged f32 GGUF: ``(session, file)``.

    f32, so the file's column equals the adapter token for token (the GGUF column and attach tests)."""
    import qlora_nb

    s = qlora_nb.load(str(model_dir), r=4, alpha=8, dropout=0.0, compute_dtype="float32")
    perturb(s, None, std=0.5, seed=1)
    return s, s.merge(folder / "out", format="gguf", outtype="f32", verbose=False).file
