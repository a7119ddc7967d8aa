"""A byte-level tokenizer built offline: shared by the tests' tiny model and ``benchmarks/gpu_check.py``.

No pytest import, so the GPU check can use it on a machine without the test dependencies.
"""

from __future__ import annotations


def build_byte_tokenizer():
    """Byte-level BPE with no merges: every byte is a token (one ASCII character is one token), plus specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for ch in pre_tokenizers.ByteLevel.alphabet():
        vocab[ch] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", bos_token="<|im_start|>",
                                   pad_token="<|endoftext|>", additional_special_tokens=specials)
