"""The model itself: where the weights come from, 4/8/16-bit loading, the tokenizer, LoRA adapters, checks."""
