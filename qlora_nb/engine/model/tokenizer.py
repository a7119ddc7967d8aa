"""Tokenizer loading with the settings training and generation both rely on."""

from __future__ import annotations

from pathlib import Path

from ...config import LoadConfig


def load_tokenizer(path: Path, cfg: LoadConfig):
    """The model's tokenizer with a pad token (eos when none) and right padding for training."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=cfg.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def cached_tokenizer(model: str):
    """The tokenizer of a model already on this machine (alias in the cache, local folder, hub cache); None if not.

    Reads tokenizer files only: no weights, no download. A plan with data needs it to count the rows' tokens.
    """
    import contextlib
    import os

    from .models import ALIASES, cache_dir

    name = str(model).strip()
    alias = ALIASES.get(name.lower())
    path = cache_dir() / "models" / alias.alias if alias is not None else Path(os.path.expanduser(name))
    if path.is_file() and path.name == "config.json":
        path = path.parent
    if path.is_dir():
        if not any((path / f).is_file() for f in TOKENIZER_FILES):
            return None
        return load_tokenizer(path, LoadConfig())
    if alias is None and name.count("/") == 1:  # a hub id: only what the hub cache already holds
        from transformers import AutoTokenizer

        with contextlib.suppress(Exception):
            tok = AutoTokenizer.from_pretrained(name, local_files_only=True)
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            tok.padding_side = "right"
            return tok
    return None
