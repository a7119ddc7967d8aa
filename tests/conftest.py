"""Shared fixtures: a tiny random Llama + byte-level tokenizer built in the test, and the demo model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from byte_tokenizer import build_byte_tokenizer

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer():
    """The byte-level tokenizer (:mod:`byte_tokenizer`) with the chat template the tests use."""
    tok = build_byte_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tiny_model_dir(path: Path, seed: int = 0, **overrides) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **{**TINY, **overrides})
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def tiny_session(tiny_model_dir):
    import qlora_nb

    return qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0)


def demo_model_available() -> bool:
    from qlora_nb.engine.model.models import cache_dir

    return (cache_dir() / "models" / "smollm2-135m" / "config.json").is_file()


@pytest.fixture(scope="session")
def demo_session_factory():
    """Loads the demo model (converted into the cache by `make model`)."""
    if not demo_model_available() and os.environ.get("CI"):
        pytest.fail("demo model missing from the cache: `make model` should have fetched it")
    import qlora_nb

    def make(**options):
        return qlora_nb.load("smollm2-135m", **options)

    return make


@pytest.fixture(scope="session")
def demo_trained(demo_session_factory, tmp_path_factory):
    """The demo model trained once on the demo task (60 steps, lr 5e-4), for every test that needs that adapter.

    Each such test used to train its own (2.5 min apiece on 2 cores, issue 34). Shared read-only: a test may
    generate, compare, save or merge from ``session``, never train it or change its adapters. The held-out exact
    match of the base (``before``) and of the trained adapter (``after``) is measured here, once, right after
    training, so no test's work can change what another reads.
    """
    from types import SimpleNamespace

    from qlora_nb.cli import exact_match

    session = demo_session_factory()
    before = exact_match(session, n=8, base=True)
    run = session.train(data="demo", max_steps=60, learning_rate=5e-4, n_probes=0,
                        output_dir=str(tmp_path_factory.mktemp("demo-trained") / "demo"))
    return SimpleNamespace(session=session, run=run, before=before, after=exact_match(session, n=8))


@pytest.fixture
def write_jsonl(tmp_path):
    def write(rows, name="data.jsonl"):
        p = tmp_path / name
        p.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
        return p

    return write


@pytest.fixture(scope="module", autouse=True)
def _frozen_heap():
    """Keep the cyclic garbage collector off what is already alive when a test file starts (issue 34).

    One pytest process accumulates about a million long-lived objects (torch, transformers, IPython, the
    session fixtures); every full collection walked them all (accelerate's ``free_memory`` runs one at the
    start of each ``Trainer.train``), which took half of test_option_boundaries' time. ``gc.freeze`` moves
    the survivors of a collection into a generation the collector skips; refcounting still frees them, and
    whatever a test creates is collected as before.
    """
    import gc

    gc.collect()
    gc.freeze()
    yield


def pytest_collection_modifyitems(config, items):
    """Markers the fast tier (``make test-fast``: not browser, integration or slow) relies on, by file and
    fixture, so a new test is sorted right without hand-marking: every test in a ``test_browser*.py`` file
    drives a browser, and one that asks for the demo model (``demo_session_factory``) is an integration test."""
    for item in items:
        if Path(str(item.fspath)).name.startswith("test_browser"):
            item.add_marker(pytest.mark.browser)
        if "demo_session_factory" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
