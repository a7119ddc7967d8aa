"""Files a user ships: saved adapters, verified merges, the accelerate script, GGUF (merged and LoRA), Ollama."""
