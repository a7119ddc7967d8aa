"""An exported GGUF served by llama.cpp itself (``--engine llama.cpp``), through the ``llama-cpp-python`` package.

Why: the default ``gguf`` column loads the file back with transformers in fp32,
which shows what the weights say but not what the program users deploy with
does, and it decodes at the session's speed. llama.cpp reads the file as
written (q8_0 stays q8_0) and decoded the demo model 6-10x faster on this CPU
(``benchmarks/llamacpp_check.py``).

How it plugs in: :class:`LlamaCppModel` answers the two calls the generation
path makes of a column's model (``generate`` and a forward for log-probs), so
:func:`~.attached.model_for` can hand it out like a transformers model and
stream/interleave/chat need no branch. Prompt ids come from the session's
tokenizer (the attach checks llama.cpp splits text the same way); llama.cpp
keeps its own KV cache and reuses the longest evaluated prefix, so the
lockstep's one-token steps do not re-read the prompt. Each sampled token draws
its seed from torch's generator, which the generation path seeds per column,
so a plain and a lockstep generation draw the same tokens.

Not installed by default: ``llama-cpp-python`` has no CPU wheel on the package
index and builds from source (20-35 min on 2 cores); ``make llamacpp-check``
builds it once into a cache.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ...errors import QloraError

ENGINE = "llama.cpp"
PIN = "llama-cpp-python==0.3.36"  # the version the check in benchmarks/llamacpp_check.py verified
# Tokens of context the column holds (prompt + reply). Fixed rather than read from the header first: gguf-py's
# reader parses the whole vocabulary in Python (seconds for a 49k vocabulary); a model trained on fewer (only tiny
# test models) gets a one-line llama.cpp warning on stderr.
_CTX = 2048


def import_llama_cpp():
    """The ``llama_cpp`` module, or one paragraph saying how to get it."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise QloraError(
            f"--engine llama.cpp needs the llama-cpp-python package, which is not importable here ({exc}).",
            where="--engine",
            hint=f"Install it into this kernel's environment with `pip install {PIN}` (it builds llama.cpp from "
                 "source: cmake and a C++ compiler, 20-35 min on 2 cores), or run `make llamacpp-check` once and "
                 "put ~/.cache/qlora_nb/llamacpp-lib on PYTHONPATH; or leave --engine out to load the file with "
                 "transformers.") from None
    return llama_cpp


def add_bos(llm) -> bool:
    """What the file says about a leading BOS (``tokenizer.ggml.add_bos_token``); llama.cpp's default otherwise."""
    value = llm.metadata.get("tokenizer.ggml.add_bos_token")
    return str(value).lower() == "true" if value is not None else True


class LlamaCppModel:
    """A llama.cpp model with the ``generate`` / forward surface the generation path uses."""

    def __init__(self, file: Path, lora: Path | None = None, n_ctx: int = _CTX, n_threads: int | None = None) -> None:
        # logits_all stays off: it would keep n_ctx x vocab fp32 logits (400 MB for the demo model at 2048); the
        # forward below reads each position's logits as it is evaluated instead.
        self.lib = import_llama_cpp()
        self.file = Path(file)
        self.llm = self.lib.Llama(model_path=str(file), lora_path=str(lora) if lora else None, n_ctx=n_ctx,
                                  n_threads=n_threads, verbose=False)
        self.nbytes = int(self.file.stat().st_size) + (int(Path(lora).stat().st_size) if lora else 0)

    def tokenize(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos(self.llm), special=True))

    def _feed(self, ids: list[int]) -> None:
        """Evaluate ``ids``, reusing the longest prefix already in llama.cpp's KV cache (the last id is always run,
        so its logits are fresh)."""
        llm = self.llm
        done = list(llm.input_ids[:llm.n_tokens])
        keep = 0
        for a, b in zip(done, ids[:-1], strict=False):
            if a != b:
                break
            keep += 1
        if len(ids) > llm.n_ctx():
            raise QloraError(f"prompt and reply need {len(ids)} tokens, more than the {llm.n_ctx()} the llama.cpp "
                             "column holds.", where="--engine", hint="Shorten the prompt or --max-new-tokens.")
        llm.n_tokens = keep  # eval() drops the KV cache after n_tokens first
        llm.eval(ids[keep:])

    def _next(self, ids: list[int], sample: bool, temperature: float, top_p: float) -> int:
        import torch

        self._feed(ids)
        if not sample:  # llama.cpp's own greedy sampler (argmax), as llama-cli --temp 0 runs it
            return int(self.llm.sample(temp=0.0, top_k=1, min_p=0.0, repeat_penalty=1.0))
        self.llm.set_seed(int(torch.randint(0, 2**31 - 1, (1,)).item()))
        return int(self.llm.sample(temp=float(temperature), top_p=float(top_p), top_k=0, min_p=0.0,
                                   repeat_penalty=1.0))

    def generate(self, input_ids, attention_mask=None, streamer=None, max_new_tokens: int = 20,
                 do_sample: bool = False, temperature: float | None = None, top_p: float | None = None,
                 eos_token_id: Any = None, return_dict_in_generate: bool = False, **_: Any):
        """transformers' ``generate`` for one row: the prompt ids then the new ones (a dict-like step when asked)."""
        import torch

        prompt = [int(t) for t in input_ids[0].tolist()]
        eos = set(eos_token_id if isinstance(eos_token_id, list) else [] if eos_token_id is None else [eos_token_id])
        if streamer is not None:
            streamer.put(input_ids.cpu())
        out: list[int] = []
        for _step in range(int(max_new_tokens)):
            token = self._next(prompt + out, bool(do_sample), temperature or 1.0, top_p or 1.0)
            out.append(token)
            if streamer is not None:
                streamer.put(torch.tensor([token]))
            if token in eos:
                break
        if streamer is not None:
            streamer.end()
        sequences = torch.tensor([prompt + out], dtype=torch.long)
        if return_dict_in_generate:
            return SimpleNamespace(sequences=sequences, cache=None, past_key_values=None)
        return sequences

    def __call__(self, input_ids, attention_mask=None, **_: Any):
        """Logits at every position of the one row (what log-probs need), from llama.cpp's own forward.

        One token per decode, reading that position's logits as it comes (llama.cpp keeps only the last batch's).
        """
        import numpy as np
        import torch

        ids = [int(t) for t in input_ids[0].tolist()]
        llm, vocab = self.llm, self.llm.n_vocab()
        rows = np.empty((len(ids), vocab), dtype=np.float32)
        llm.reset()
        for i, token in enumerate(ids):
            llm.eval([token])
            rows[i] = np.ctypeslib.as_array(self.lib.llama_get_logits_ith(llm.ctx, -1), shape=(vocab,))
        return SimpleNamespace(logits=torch.from_numpy(rows)[None])

    def close(self) -> None:
        close = getattr(self.llm, "close", None)
        if close is not None:
            close()


def same_ids(model: LlamaCppModel, tokenizer, probes: list[str]) -> bool:
    """llama.cpp splits each probe into the ids the session's tokenizer gives (BOS as the file states)."""
    return all(model.tokenize(p) == tokenizer(p)["input_ids"] for p in probes)
