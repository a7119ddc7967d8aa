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
