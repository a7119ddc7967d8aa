"""``--engine llama.cpp``: the gguf column served by llama-cpp-python; its refusals; a real run where it is installed.

The column's decoding loop (KV prefix reuse, EOS, streamer, seeds, per-position logits) is checked against a
stand-in ``llama_cpp`` module with a known rule, so it runs in ``make test`` without the package (it has no CPU
wheel and builds from source). The real comparison runs only when ``llama_cpp`` imports.
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys
import types

import pytest
from adapter_helpers import gguf_export_of_a_changed_adapter, perturb

from qlora_nb.errors import QloraError

PROMPTS = ["Hello there, how are you?", "def add(a, b):"]
VOCAB = 40
HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None


def _rule(context) -> list[float]:
    """The stand-in model: the next token is (sum of the context) mod VOCAB, with logits falling off around it."""
    target = int(sum(int(t) for t in context)) % VOCAB
    return [-abs(i - target) / 4.0 for i in range(VOCAB)]


class FakeLlama:
    """The part of ``llama_cpp.Llama`` the column uses, with a known next-token rule and an evaluation count."""

    def __init__(self, model_path, lora_path=None, n_ctx=512, n_threads=None, verbose=True, tokenize=None):
        import numpy as np

        self.model_path, self.lora_path, self._n_ctx = model_path, lora_path, n_ctx
        self.input_ids = np.zeros(n_ctx, dtype=np.intc)
        self.n_tokens, self.evaluated, self.seed, self.closed = 0, 0, 0, False
        self.metadata = {"tokenizer.ggml.add_bos_token": "false"}
        self.ctx = object()
        self._tokenize = tokenize

    def n_ctx(self):
        return self._n_ctx

    def n_vocab(self):
        return VOCAB

    def reset(self):
        self.n_tokens = 0

    def eval(self, tokens):
        for t in tokens:
            self.input_ids[self.n_tokens] = t
            self.n_tokens += 1
        self.evaluated += len(tokens)
        self.last = _rule(self.input_ids[:self.n_tokens])

    def set_seed(self, seed):
        self.seed = seed

    def sample(self, temp=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0, idx=None):
        import numpy as np

        logits = np.array(self.last)
        if temp == 0.0:
            return int(logits.argmax())
        p = np.exp(logits / temp)
        return int(np.random.default_rng(self.seed).choice(VOCAB, p=p / p.sum()))

    def tokenize(self, text, add_bos=True, special=False):
        return self._tokenize(text.decode()) if self._tokenize else []

    def close(self):
        self.closed = True


def fake_module(tokenize=None):
    mod = types.ModuleType("llama_cpp")
    mod.Llama = lambda model_path, **kw: FakeLlama(model_path, tokenize=tokenize, **kw)
    keep = []

    def llama_get_logits_ith(ctx, i):
        arr = (ctypes.c_float * VOCAB)(*mod.current.last)
        keep.append(arr)
        return ctypes.cast(arr, ctypes.POINTER(ctypes.c_float))

    mod.llama_get_logits_ith = llama_get_logits_ith
    return mod


def _model(monkeypatch, tmp_path, tokenize=None):
    from qlora_nb.engine.generation.llamacpp import LlamaCppModel

    mod = fake_module(tokenize)
    monkeypatch.setitem(sys.modules, "llama_cpp", mod)
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    model = LlamaCppModel(tmp_path / "m.gguf")
    mod.current = model.llm
    return model


def _expected(prompt, n, eos=None):
    out = []
    for _ in range(n):
        out.append(_rule(prompt + out).index(0.0))
        if out[-1] == eos:
            break
    return out


def test_greedy_reuses_the_kv_prefix_and_stops_at_eos(monkeypatch, tmp_path):
    import torch

    model = _model(monkeypatch, tmp_path)
    prompt = [3, 5, 7]
    seq = model.generate(torch.tensor([prompt]), max_new_tokens=6)
    assert seq[0].tolist() == prompt + _expected(prompt, 6)
    assert model.llm.evaluated == len(prompt) + 6 - 1  # each new token evaluated once, the prompt once
    before = model.llm.evaluated
    steps = [model.generate(torch.tensor([prompt]), max_new_tokens=1, return_dict_in_generate=True)]
    for _ in range(3):  # the lockstep's one-token steps: only the new token is evaluated each time
        x = steps[-1].sequences
        steps.append(model.generate(x, max_new_tokens=1, return_dict_in_generate=True))
    assert steps[-1].sequences[0].tolist() == prompt + _expected(prompt, 4) and steps[-1].cache is None
    assert model.llm.evaluated - before <= 1 + 4  # the prompt's last token (fresh logits) and one per step
    eos = _expected(prompt, 3)[2]
    assert model.generate(torch.tensor([prompt]), max_new_tokens=10, eos_token_id=[eos])[0].tolist()[-1] == eos


def test_streamer_forward_logits_and_seeded_sampling(monkeypatch, tmp_path):
    import torch

    model = _model(monkeypatch, tmp_path)
    heard = []

    class Streamer:
        def put(self, value):
            heard.append(value.tolist())

        def end(self):
            heard.append("end")

    prompt = [1, 2]
    model.generate(torch.tensor([prompt]), max_new_tokens=3, streamer=Streamer())
    assert heard == [[prompt], *([t] for t in _expected(prompt, 3)), "end"]
    logits = model(input_ids=torch.tensor([[4, 9, 1]])).logits
    assert logits.shape == (1, 3, VOCAB)
    assert [row.argmax().item() for row in logits[0]] == [4 % VOCAB, 13 % VOCAB, 14 % VOCAB]

    def sampled():
        torch.manual_seed(7)
        return model.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=True, temperature=1.0,
                              top_p=1.0)[0].tolist()

    first = sampled()
    assert sampled() == first and first[2:] != prompt + _expected(prompt, 8)  # reproducible, and not greedy


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    s, file = gguf_export_of_a_changed_adapter(tiny_model_dir, tmp_path_factory.mktemp("g"))
    yield s, file
    s.detach_gguf()


def test_the_column_goes_through_compare_stream_and_chat(exported, monkeypatch):
    s, file = exported
    tok = s.tokenizer
    mod = fake_module(lambda text: tok(text)["input_ids"])
    real = mod.Llama

    def made(model_path, **kw):
        mod.current = real(model_path, **kw)
        return mod.current

    mod.Llama = made
    monkeypatch.setitem(sys.modules, "llama_cpp", mod)
    try:
        r = s.compare(PROMPTS, gguf=str(file), engine="llama.cpp", max_new_tokens=5)
        assert r.columns == ["base", "default", "gguf"]
        assert any("served by llama.cpp" in n for n in r.notes) and s.attached["gguf"].engine == "llama.cpp"
        for record in r:  # the column's ids are the stand-in's rule on the session's prompt ids
            got = record["columns"]["gguf"]["ids"]
            assert got and got == _expected(record["prompt_ids"], 5)[:len(got)]
        streamed = s.stream(PROMPTS[0], max_new_tokens=4, on_event=lambda e: None)  # lockstep, one token a step
        assert streamed.columns == ["base", "default", "gguf"]
        single = s.generate(PROMPTS[0], adapter="gguf", max_new_tokens=4)
        assert streamed.cells["gguf"]["text"] == single
        llm = mod.current
    finally:
        s.detach_gguf()
    assert llm.closed and s.attached == {}
    # transformers stays the default
    assert s.compare(PROMPTS[:1], gguf=str(file), max_new_tokens=2) and s.attached["gguf"].engine == "transformers"
    s.detach_gguf()


# ------------------------------------------------------------------ bad input
def test_not_installed_is_one_paragraph_and_the_session_is_unchanged(exported, monkeypatch):
    s, file = exported
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp raises ImportError
    with pytest.raises(QloraError, match=r"^--engine: --engine llama\.cpp needs the llama-cpp-python package.*"
                                         r"pip install llama-cpp-python==0\.3\.36.*make llamacpp-check.*"
                                         r"leave --engine out") as err:
        s.compare(PROMPTS[:1], gguf=str(file), engine="llama.cpp")
    assert "\n" not in str(err.value) and getattr(s, "attached", {}) == {}


def test_a_file_llama_cpp_splits_differently_is_refused(exported, monkeypatch):
    s, file = exported
    monkeypatch.setitem(sys.modules, "llama_cpp", fake_module(lambda text: [1, 2, 3]))
    with pytest.raises(QloraError, match=r"^--gguf: llama\.cpp splits text differently.*exported from this session"):
        s.attach_gguf(file, engine="llama.cpp")
    assert s.attached == {}


def test_engine_without_a_file_or_unknown_is_refused(exported):
    s, file = exported
    with pytest.raises(QloraError, match=r"engine llama\.cpp serves the gguf column, but no GGUF file.*--gguf FILE"):
        s.compare(PROMPTS[:1], engine="llama.cpp")
    with pytest.raises(QloraError, match=r"'engine': 'vllm' is not accepted\. Accepted: llama\.cpp, transformers"):
        s.attach_gguf(file, engine="vllm")


def test_magic_engine_flag(exported, monkeypatch):
    from IPython.testing.globalipapp import get_ipython

    s, file = exported
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    ip = get_ipython()
    ip.run_line_magic("load_ext", "qlora_nb")
    ip.user_ns["qlora"] = s
    try:
        with pytest.raises(QloraError, match=r"^--engine: .*needs the llama-cpp-python package"):
            ip.run_line_magic("qlora_compare", f'"Hi" --gguf {file} --engine llama.cpp')
        with pytest.raises(QloraError, match=r"option .engine.: engine llama\.cpp serves the gguf column"):
            ip.run_line_magic("qlora_compare", '"Hi" --engine llama.cpp')
    finally:
        ip.run_line_magic("unload_ext", "qlora_nb")
        ip.user_ns.pop("qlora", None)


# ------------------------------------------------------------------ the real program
@pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed (it builds from source: "
                                              "`make llamacpp-check` installs it into ~/.cache/qlora_nb/llamacpp-lib)")
def test_llama_cpp_answers_like_the_adapter_on_a_tiny_model(tmp_path):
    """A tiny Llama with a sentencepiece vocabulary (llama.cpp refuses a BPE vocabulary without merges, which
    the byte-level test tokenizer is): same prompt ids, same greedy tokens, logits within 1%."""
    import torch
    from test_gguf_spm import _model_dir, _trained

    s = _trained(_model_dir(tmp_path / "spm", "llama"))
    perturb(s, None, std=0.5, seed=1)
    file = s.merge(tmp_path / "g", format="gguf", outtype="f32", verbose=False).file
    prompts = [*PROMPTS, "Tell me about Rome ü!"]
    r = s.compare(prompts, gguf=str(file), engine="llama.cpp", max_new_tokens=10)
    try:
        model = s.attached["gguf"].model
        assert all(model.tokenize(p) == s.tokenizer(p)["input_ids"] for p in prompts)
        for record in r:
            cells = record["columns"]
            assert cells["gguf"]["ids"] == cells["default"]["ids"] and cells["gguf"]["ids"]
        assert any(rec["columns"]["default"]["ids"] != rec["columns"]["base"]["ids"] for rec in r)
        ids = s.tokenizer(prompts[0])["input_ids"]
        theirs = model(input_ids=torch.tensor([ids])).logits[0]
        with torch.no_grad():
            mine = s.model(input_ids=torch.tensor([ids])).logits[0].float()
        assert (theirs - mine).abs().max().item() < 1e-2 * max(1.0, mine.abs().max().item())
        streamed = s.stream(prompts[1], max_new_tokens=6, on_event=lambda e: None)  # lockstep, one token a step
        assert streamed.cells["gguf"]["ids"] == streamed.cells["default"]["ids"]
    finally:
        s.detach_gguf()
