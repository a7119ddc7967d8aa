"""The CPU training fast path: fused LoRA op, fused RMSNorm, cheap dropout masks (each with its measured reason)."""
