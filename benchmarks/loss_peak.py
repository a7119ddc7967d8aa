"""How many bytes per (token, vocab) logit entry the pinned loss path keeps alive at its peak: a tensor count.

``cuda_peak.PINNED.logit_peak`` (12 B) is read off transformers' code: fp32 upcast, ``cross_entropy`` =
``log_softmax`` + ``nll_loss``, only the log-probabilities saved, the Trainer dropping the model output before
``backward``. This script checks that reading with the installed libraries by counting the bytes of every live
tensor storage (a ``TorchDispatchMode`` that adds each new storage and subtracts it when it is freed) through
one forward + backward of a one-layer Llama whose logits dominate (vocab 32,000, hidden 64, batch 2 x 256).
It counts tensors, not allocator blocks, so it means the same on CPU as on CUDA (kernel workspaces aside).

    python benchmarks/loss_peak.py      # B per logit entry for three loss paths; layers in flight

Measured (transformers 5.24, torch 2.13 CPU, AMD EPYC 2 cores; model weights excluded, their views too):
Trainer path 12.02, qlora_nb's labelled loss 11.97, a loop that keeps the output through backward 14.02 B per
logit entry (the bf16 logits, 2 B, stay alive); transformers 4.37's loss (fp32 logits in the output, a shifted
copy) as fsdp_qlora's loop ran it, emulated: 15.97 (published_memory.py's Answer.AI stack: 16). With non-reentrant checkpointing every added decoder layer adds
exactly cd*h = 512 B per token to the peak (one checkpoint), 9,240 B without; the peak less the checkpoints is
one layer's working set (its recomputed tensors plus the gradients it produces).
"""

from __future__ import annotations

import sys
import weakref
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

V, B, S = 32000, 2, 256


def _live_counter():
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Live(TorchDispatchMode):
        """``model``'s parameters and buffers exist before: views of them (``w.t()``) are not new bytes."""

        def __init__(self, model=None):
            super().__init__()
            self.cur = self.peak = 0
            self.seen: set[int] = set()
            self.old = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]} \
                if model is not None else set()

        def _track(self, t) -> None:
            if not isinstance(t, torch.Tensor):
                return
            st = t.untyped_storage()
            key, n = st.data_ptr(), st.nbytes()
            if n == 0 or key in self.seen or key in self.old:
                return
            self.seen.add(key)
            self.cur += n
            self.peak = max(self.peak, self.cur)

            def gone(k: int = key, size: int = n) -> None:
                self.cur -= size
                self.seen.discard(k)

            weakref.finalize(st, gone)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                self._track(t)
            return out

    return Live


def main() -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from qlora_nb.engine.training.loss import labelled_loss

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=4, vocab_size=V, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.config._attn_implementation = "sdpa"
    for p in model.parameters():
        p.requires_grad_(False)
    model.model.layers[0].mlp.down_proj.weight.requires_grad_(True)  # something to differentiate through
    ids = torch.randint(0, V, (B, S))
    entries = B * S * V
    Live = _live_counter()

    def trainer() -> None:  # Trainer.compute_loss returns the loss only; the output is dropped
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()

    def labelled() -> None:  # qlora_nb's own loss (engine/training/loss.py), every position labelled
        labelled_loss(model, {"input_ids": ids, "labels": ids}).backward()

    def holding() -> None:  # a hand loop that keeps `output` until after backward (fsdp_qlora's train.py)
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()

    def v437() -> None:  # transformers 4.37's LlamaForCausalLM loss, as fsdp_qlora's loop ran it (output kept)
        hidden = model.model(input_ids=ids).last_hidden_state
        logits = model.lm_head(hidden).float()  # kept in the output through backward
        shift = logits[..., :-1, :].contiguous()
        loss = torch.nn.functional.cross_entropy(shift.view(-1, V), ids[..., 1:].reshape(-1))
        del shift
        loss.backward()

    for name, step in (("Trainer", trainer), ("labelled loss", labelled), ("loop holding the output", holding),
                       ("4.37 loss, output kept", v437)):
        with Live(model) as live:
            step()
        print(f"{name:<24} peak live tensors {live.peak / entries:.2f} B per logit entry ({entries:,} entries)")
    layers_in_flight(Live)
    return 0


def layers_in_flight(Live) -> None:
    """With checkpointing each extra decoder layer should add only its input (cd*h per token) to the peak."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    h, tokens = 256, 2 * 512
    for checkpointing in (True, False):
        peaks = []
        for layers in (2, 4, 8):
            torch.manual_seed(0)
            cfg = LlamaConfig(hidden_size=h, intermediate_size=3 * h, num_hidden_layers=layers, num_attention_heads=4,
                              num_key_value_heads=4, vocab_size=128, tie_word_embeddings=False, use_cache=False)
            model = LlamaForCausalLM(cfg).to(torch.bfloat16).train()
            model.config._attn_implementation = "sdpa"
            if checkpointing:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            for p in model.parameters():
                p.requires_grad_(False)
            for layer in model.model.layers:  # gradients flow through every layer, nearly no weight gradients
                layer.input_layernorm.weight.requires_grad_(True)
            ids = torch.randint(0, 128, (2, 512))
            with Live(model) as live:
                model(input_ids=ids, labels=ids).loss.backward()
            peaks.append(live.peak)
        added = [(peaks[1] - peaks[0]) / 2 / tokens, (peaks[2] - peaks[1]) / 4 / tokens]
        working = (peaks[2] - 8 * 2 * h * tokens) / tokens
        print(f"checkpointing {checkpointing!s:<5}: each added layer {added[0]:.0f} / {added[1]:.0f} B per token "
              f"(cd*h = {2 * h})" + (f"; peak less the 8 checkpoints {working:.0f} B per token (one layer in "
                                     f"flight)" if checkpointing else ""))


if __name__ == "__main__":
    raise SystemExit(main())
