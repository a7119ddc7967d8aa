"""One generation path for every column (base, adapters, an attached GGUF): compare, stream, chat."""
