"""The labelled-positions loss equals the model's own loss and gradients, and training uses it."""

from __future__ import annotations

import pytest
from grad_helpers import lora_params, loss_and_grads


def _batch(session, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, session.model.config.vocab_size, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0  # a right-padded row
    labels = ids.clone()
    labels[:, :5] = -100  # prompt tokens
    labels[2, 9:] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("bits", [16, 4])
def test_labelled_loss_matches_the_models_own_loss_and_gradients(tiny_model_dir, bits):
    import torch

    import qlora_nb
    from qlora_nb.engine.training.loss import labelled_loss, supports_labelled_loss

    session = qlora_nb.load(str(tiny_model_dir), bits=bits, r=4, alpha=8, dropout=0.0, compute_dtype="float32")
    with torch.no_grad():  # B starts at zero; move it so the adapters' gradients depend on the whole path
        for n, p in lora_params(session).items():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    assert supports_labelled_loss(session.model)
    batch = _batch(session)
    ref_loss, ref_grads = loss_and_grads(session, lambda: session.model(**batch).loss)
    loss, grads = loss_and_grads(session, lambda: labelled_loss(session.model, batch))
    assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-6), (loss, ref_loss)
    assert grads.keys() == ref_grads.keys() == lora_params(session).keys()
    assert all(g is not None for g in grads.values()), "a LoRA parameter got no gradient"
    for n, g in grads.items():
        assert torch.allclose(g, ref_grads[n], rtol=1e-4, atol=1e-6), n
    labelled = int((batch["labels"][:, 1:] != -100).sum())
    summed = labelled_loss(session.model, batch, num_items_in_batch=2 * labelled)  # half of an accumulated batch
    assert torch.allclose(summed, ref_loss / 2, rtol=1e-5)


def test_labelled_loss_without_labels_is_zero_not_nan(tiny_session):
    import torch

    from qlora_nb.engine.training.loss import labelled_loss

    batch = _batch(tiny_session)
    batch["labels"] = torch.full_like(batch["labels"], -100)
    assert float(labelled_loss(tiny_session.model, batch).detach()) == 0.0


def test_unknown_heads_take_the_models_own_forward(tiny_session):
    from qlora_nb.engine.training.loss import supports_labelled_loss

    cfg = tiny_session.model.get_base_model().config
    cfg.model_type, saved = "gemma2", cfg.model_type  # soft-capped logits: not a plain head
    try:
        assert not supports_labelled_loss(tiny_session.model)
    finally:
        cfg.model_type = saved


def test_training_uses_the_labelled_loss_and_restores_attention(tiny_session, tmp_path, monkeypatch):
    from qlora_nb.engine.training import loss as loss_mod

    calls = []
    real = loss_mod.labelled_loss
    monkeypatch.setattr(loss_mod, "labelled_loss", lambda *a, **k: calls.append(1) or real(*a, **k))
    seen = []
    base = tiny_session.model.get_base_model()
    tiny_session.events.subscribe(lambda e: e.get("kind") == "step" and seen.append(base.config._attn_implementation))
    rows = [{"instruction": f"say {i}", "output": f"number {i}"} for i in range(8)]
    result = tiny_session.train(data=rows, max_steps=3, batch_size=2, val_split=0, n_probes=0,
                                output_dir=str(tmp_path / "run"))
    assert len(calls) == 3 and result.history[-1]["loss"] > 0
    assert seen == ["eager"] * 3  # short rows on a CPU train with eager attention
    assert base.config._attn_implementation == "sdpa"  # and generation gets the model's own kernel back
