"""A tiny Llama 2 / Mistral-style tokenizer (sentencepiece-style BPE with byte fallback), built offline in the test.

Laid out as a converted ``tokenizer.model`` is: ``<unk> <s> </s>``, the 256
``<0xXX>`` byte tokens, single characters, then one token per merge in merge
order. The merges are learned by ``tokenizers`` on a few sentences; no
sentencepiece package and no download.
"""

from __future__ import annotations

import json

TEXT = ["Hello there, how are you?", "def add(a, b): return a + b", "3 + 4 = 7", "The capital of France is Paris.",
        "What is the capital of Italy? Rome.", "Tell me a story about a brave little toaster."]
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set sys = '<<SYS>>\\n' + messages[0]['content'] + '\\n<</SYS>>\\n\\n' %}"
    "{% set messages = messages[1:] %}{% else %}{% set sys = '' %}{% endif %}"
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ bos_token + '[INST] ' + (sys if loop.first else '') + "
    "m['content'] + ' [/INST]' }}{% else %}{{ ' ' + m['content'] + ' ' + eos_token }}{% endif %}{% endfor %}"
)


def build_spm_tokenizer(vocab_size: int = 420):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizers.Metaspace()
    learner.train_from_iterator(TEXT * 10, trainers.BpeTrainer(vocab_size=vocab_size - 259, show_progress=False))
    spec = json.loads(learner.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["merges"]]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for token in sorted(t for t in spec["vocab"] if len(t) == 1):
        vocab.setdefault(token, len(vocab))
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = LlamaTokenizer(vocab=vocab, merges=merges, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tok.chat_template = LLAMA2_TEMPLATE
    return tok
