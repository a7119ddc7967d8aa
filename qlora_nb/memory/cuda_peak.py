"""What one CUDA training step holds at its peak: the activation and logit terms, read off the pinned code.

The CPU terms of :mod:`.planner` are a fit of process RSS on this machine; on CUDA
the caching allocator holds exactly the tensors alive plus its own slack, so the
terms here are counted from what the pinned libraries keep (transformers 5.24,
peft 0.21, torch SDPA, the Trainer or :mod:`qlora_nb.engine.training.loss`):

* **Loss.** ``ForCausalLMLoss`` (and our labelled loss) upcasts the logits to
  fp32 and calls ``cross_entropy`` = ``log_softmax`` + ``nll_loss``; only the
  log-probabilities are saved (the cast and the shift keep nothing, labels are
  shifted, not the logits). The Trainer drops the model output before
  ``backward``, so the bf16 logits are gone by then. At the loss backward three
  fp32 logit-sized tensors are alive (the log-probabilities, their gradient from
  ``nll_loss``, the input gradient of ``log_softmax``): **12 B per (token, vocab)
  entry**, none held while the decoder layers run backward (``Stack.logit_peak``
  / ``logit_held``; the forward peaks lower, at 10 B: bf16 logits + fp32 upcast
  + log-probabilities). Counted with the installed libraries (live tensor
  storages through one step, benchmarks/loss_peak.py): 12.02 B per entry for
  the Trainer, 11.97 for the labelled loss, 14.02 for a loop that keeps the
  output through backward. The CPU RSS fit found about 5 fp32 copies + the bf16
  logits: process RSS also holds what malloc has not returned.
* **Attention.** SDPA on CUDA (flash or memory-efficient) keeps the output and
  an fp32 log-sum-exp per head, no ``s x s`` matrix; backward adds dq, dk, dv
  plus an fp32 dq accumulator for the layer being differentiated.
* **Layers in flight.** With gradient checkpointing (``use_reentrant=False``,
  one checkpoint per decoder layer, the same under DDP and FSDP) every layer
  keeps its input (``cd·h`` per token) and, during backward, exactly one layer
  is recomputed at a time: its saved tensors (the planner's per-layer bytes)
  plus the gradients it is producing (the larger of the MLP's three ``cd·I``
  gradients and attention's dq/dk/dv + fp32 dq) and the hidden-state gradient
  and residual (``2·cd·h``). A 4/8-bit base also dequantizes one weight at a
  time to the compute dtype (the largest linear). Without checkpointing all
  layers' saved tensors are alive (loss_peak.py: with checkpointing each added
  layer adds exactly ``cd·h`` per token to the peak; the peak less the
  checkpoints was within 3% of one layer's saved bytes + these gradients).
  FSDP adds its gathered units
  (:mod:`.multi_device`), not activations.
* **Phases.** The peak is the larger of the loss phase (checkpoints + the loss
  tensors) and the first layer's backward (checkpoints + one layer + held
  logits); the old model added both, which is why it read 1.45–1.75x the
  published figures at context 2048 and batch >= 4.
* **The allocator.** ``memory_reserved`` (what runs out) exceeds the tensors
  alive by the caching allocator's rounding and fragmentation: segments cached
  after a free are reused only by requests that fit, so the many activation
  tensors of changing sizes leave holes (``RESERVE``, a share of the activation
  bytes; the few logit-sized blocks are freed and re-requested at the same size
  every step, so they leave none: fitting the share on activations + logits
  instead over-forecast the logit-heavy rows by 8-9%), and blocks cached while loading, quantizing and wrapping the model stay
  reserved (``ALLOCATOR_CACHE_BYTES``; Answer.AI published 3.72 GiB reserved
  after wrapping a 7B QLoRA whose shards are ~1.9 GiB). Both are fitted on the
  published per-GPU peaks (benchmarks/published_memory.py, fit rows only); the
  held-out rows are the check (``CHECK_ERROR_PCT``, their worst error).

The plan forecasts what the device must have free: the allocator's reserved
bytes (every component but ``overhead``'s context share) plus the CUDA context,
which lives outside the allocator (``nvidia-smi`` shows both; ``torch.cuda.
max_memory_reserved`` only the first). :func:`reserved_bytes` gives the first.
"""

from __future__ import annotations

from dataclasses import dataclass

from .architectures import Arch
from .formulas import DTYPE_BYTES

CUDA_CONTEXT_BYTES = 512 * 2**20  # CUDA context + kernels loaded lazily (torch >= 2.1), outside the allocator
# Fitted on the published rows marked "fit" (benchmarks/published_memory.py; see PUBLISHED_MEMORY.md).
RESERVE = 0.576  # reserved-but-free bytes per activation byte at the peak
ALLOCATOR_CACHE_BYTES = 1300 * 2**20  # blocks the allocator keeps cached from loading / quantizing / wrapping
CHECK_ERROR_PCT = 17  # worst error of the held-out published rows (the "±N% published check" of the plan text)


@dataclass(frozen=True)
class Stack:
    """What the training code keeps, per library version (each figure read off that version's code)."""

    name: str
    logit_peak: int = 12  # bytes per (token, vocab) entry alive at the loss backward
    logit_held: int = 0  # bytes per entry still alive while the decoder layers run backward
    adapter_bytes: int = 4  # LoRA weights, their gradients and AdamW states: fp32 (peft >= 0.12 upcasts)


PINNED = Stack("transformers 5.24 Trainer / labelled loss, peft 0.21 fp32 adapters, torch SDPA")


def layer_backward_bytes(arch: Arch, cd: int) -> int:
    """Per token: the gradients one decoder layer produces while it runs backward, beyond its saved tensors."""
    mlp = 3 * cd * arch.intermediate
    attn = cd * (arch.q_dim + 2 * arch.kv_dim) + 4 * arch.q_dim
    return max(mlp, attn) + 2 * cd * arch.hidden


def dequantized_weight_bytes(arch: Arch, bits: int, cd: int) -> int:
    """A 4/8-bit base dequantizes one weight at a time: the largest linear in the compute dtype."""
    if bits >= 16:
        return 0
    return max(s.numel for s in arch.linears()) * cd


def dynamic_peak(arch: Arch, cfg, per_layer: int, stack: Stack = PINNED) -> tuple[int, int]:
    """(activations, logits) bytes alive at the step's peak on CUDA, before the allocator's slack."""
    cd = DTYPE_BYTES[cfg.compute_dtype]
    tokens = cfg.batch_size * cfg.seq_len
    logit_entries = tokens * arch.vocab
    if cfg.gradient_checkpointing:
        kept = tokens * arch.layers * cd * arch.hidden
        in_layer = tokens * (per_layer + layer_backward_bytes(arch, cd))
    else:
        kept = tokens * arch.layers * per_layer
        in_layer = tokens * layer_backward_bytes(arch, cd)
    loss_phase = (kept + tokens * cd * arch.hidden, logit_entries * stack.logit_peak)
    layer_phase = (kept + in_layer + dequantized_weight_bytes(arch, cfg.base_bits, cd),
                   logit_entries * stack.logit_held)
    return max(loss_phase, layer_phase, key=sum)


def slack_bytes(activations: int, logits: int) -> int:
    """The caching allocator's reserved-but-free bytes at the peak (see the module docstring)."""
    del logits  # reused at the same size every step (module docstring)
    return int(RESERVE * activations) + ALLOCATOR_CACHE_BYTES


def reserved_bytes(components: dict[str, int]) -> int:
    """What ``torch.cuda.max_memory_reserved`` would read: the plan's total less the CUDA context."""
    return sum(components.values()) - CUDA_CONTEXT_BYTES
