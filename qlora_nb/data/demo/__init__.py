"""The shipped demo dataset (train.jsonl / val.jsonl), written by :mod:`qlora_nb.data.demo.generate`."""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
