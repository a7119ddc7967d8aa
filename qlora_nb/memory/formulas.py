"""Storage formulas shared by the planner (and its JS port, ``widgets/planner.js``).

These replicate what bitsandbytes 0.50 allocates, tensor by tensor, so the
planner's weights and constants equal :mod:`qlora_nb.memory.ledger` to the byte:

* ``Params4bit``: ``(n + 1) // 2`` uint8 bytes (two 4-bit codes per byte);
* ``quant_state.absmax``: one value per block of 64 (ceil) — fp32, or uint8 with
  double quantization, which adds an fp32 ``offset`` scalar, a second-level fp32
  absmax per 256 first-level blocks (ceil) and a 256-entry fp32 code table;
* ``quant_state.code``: the 16-entry fp32 NF4/FP4 table — one per layer (each
  ``Linear4bit`` holds its own copy in bnb 0.50; checked against the real tensors);
* LLM.int8: the int8 weight plus one fp32 ``SCB`` scale per output row.

No torch import: the planner must run from a config alone.
"""

from __future__ import annotations

import math

BLOCK = 64  # QLoRA first-level block size
BLOCK2 = 256  # double-quantization block size
CODE4_ENTRIES = 16
CODE8_ENTRIES = 256
FP32 = 4
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "auto": 2}  # auto is bfloat16 or float16: 2 bytes


def packed_4bit_bytes(n: int) -> int:
    return (n + 1) // 2


def absmax_blocks(n: int, block: int = BLOCK) -> int:
    return math.ceil(n / block)


def constants_4bit_bytes(n: int, double_quant: bool, block: int = BLOCK, block2: int = BLOCK2) -> int:
    """Bytes of one 4-bit weight's ``quant_state`` tensors (absmax, code, nested state)."""
    blocks = absmax_blocks(n, block)
    code = CODE4_ENTRIES * FP32
    if not double_quant:
        return blocks * FP32 + code
    return blocks * 1 + FP32 + math.ceil(blocks / block2) * FP32 + CODE8_ENTRIES * FP32 + code


def int8_bytes(d_in: int, d_out: int) -> tuple[int, int]:
    """(weight bytes, SCB bytes) of one LLM.int8 linear."""
    return d_in * d_out, d_out * FP32


def constant_bits_per_param(double_quant: bool, block: int = BLOCK, block2: int = BLOCK2) -> float:
    """The QLoRA paper's asymptotic constant cost: 32/64 = 0.5, with DQ 8/64 + 32/(64*256) = 0.127."""
    if not double_quant:
        return 32 / block
    return 8 / block + 32 / (block * block2)


def lora_params(r: int, d_in: int, d_out: int) -> int:
    """LoRA A (r x d_in) plus B (d_out x r): r * (d_in + d_out)."""
    return r * (d_in + d_out)


def adamw_state_bytes(numel: int) -> int:
    """torch AdamW: exp_avg + exp_avg_sq in fp32, plus a 4-byte ``step`` tensor per parameter tensor."""
    return 8 * numel + FP32


def adamw8bit_state_bytes(numel: int, min_8bit_size: int = 4096, block: int = 256) -> int:
    """bitsandbytes 8-bit Adam: two uint8 states plus fp32 absmax per 256; small tensors stay 32-bit."""
    if numel < min_8bit_size:
        return 8 * numel
    return 2 * numel + 2 * math.ceil(numel / block) * FP32


def bits_per_quantized_param(components: dict[str, int], quantized_params: int) -> float | None:
    """Storage bits per quantized parameter (packed codes plus their constants); None with nothing quantized."""
    if not quantized_params:
        return None
    return 8 * (components["quantized_weights"] + components["quant_constants"]) / quantized_params
