"""Base vs adapted comparison: one copy of the weights, a real base, training intact, clear errors, widget state."""

from __future__ import annotations

import pytest
from adapter_helpers import add_adapter, perturb
from grad_helpers import grads_after_one_step, lora_params

import qlora_nb
from qlora_nb.engine.generation.columns import diff_mask, diverge_index, token_pieces
from qlora_nb.engine.generation.generate import CompareResult
from qlora_nb.errors import QloraError

FAST = {"max_new_tokens": 6}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny-model ops are latency-bound: one intra-op thread avoids OpenMP spin contention on a busy 2-core box."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------ helpers
def test_diverge_index_and_diff_mask():
    assert diverge_index([1, 2, 3], [1, 2, 3]) is None
    assert diverge_index([1, 2, 3], [1, 5, 3]) == 1
    assert diverge_index([1, 2], [1, 2, 3]) == 2
    assert diverge_index([1, 2, 3], [1, 2]) == 2
    # still generating (the playground's live mark): a prefix of the base has not departed yet
    assert diverge_index([1, 2], [1, 2, 3], partial=True) is None
    assert diverge_index([1, 2, 3, 4], [1, 2, 3], partial=True) == 3
    assert diverge_index([1, 9], [1, 2, 3], partial=True) == 1
    assert diff_mask([1, 2, 9, 4], [1, 2, 3, 4]) == [False, False, True, False]


def test_token_pieces_rebuild_the_text_with_multibyte_characters(tiny_session):
    tok = tiny_session.tokenizer
    text = "héllo ✓ wörld"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text)  # byte-level: multi-byte characters span several tokens
    pieces = token_pieces(tok, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == text
    assert "" in pieces  # an incomplete character waits for the token that completes it


# ------------------------------------------------------------- behaviour
def test_untrained_adapter_shows_base_only_and_says_so(tiny_session):
    result = tiny_session.compare("Hello", **FAST)
    assert result.columns == ["base"]
    assert any("not been trained" in n and "'default'" in n for n in result.notes)
    rec = result[0]
    assert rec["adapted"] is None and rec["changed"] is False and len(rec["base_ids"]) > 0
    assert "not been trained" in result.text()


def test_compare_streams_tokens_on_the_bus_and_on_event(tiny_session):
    perturb(tiny_session)
    bus, cb = [], []
    tiny_session.events.subscribe(bus.append)
    result = tiny_session.compare(["Hello", "abc"], on_event=cb.append, **FAST)
    assert [e["kind"] for e in bus] == [e["kind"] for e in cb]
    assert bus[0]["kind"] == "compare_begin" and bus[-1]["kind"] == "compare_end"
    assert bus[0]["columns"] == ["base", "default"] and bus[0]["prompts"] == ["Hello", "abc"]
    assert [e["row"] for e in bus if e["kind"] == "compare_row"] == [0, 1]
    for row, rec in enumerate(result):
        for col in ("base", "default"):
            toks = [e for e in bus if e["kind"] == "compare_token" and e["row"] == row and e["column"] == col]
            ids = rec["columns"][col]["ids"]
            counts = [e["n_tokens"] for e in toks]  # one per token, plus a flush when it ends mid-character
            assert sorted(set(counts)) == list(range(1, len(ids) + 1)) and counts == sorted(counts)
            assert toks[-1]["text"] == rec["columns"][col]["text"]
            assert "".join(e["delta"] for e in toks) == rec["columns"][col]["text"]
    assert bus[-1]["result"]["total"] == 2
    assert result.changed_count == sum(r["changed"] for r in result)


def test_records_and_dataframe(tiny_session):
    perturb(tiny_session)
    result = tiny_session.compare(["Hello", "abc"], logprobs=True, **FAST)
    assert isinstance(result, CompareResult) and len(result) == 2
    for rec in result:
        assert rec["adapter"] == "default" and rec["default"] == rec["adapted"]
        assert rec["changed"] == (rec["base_ids"] != rec["adapted_ids"])
        assert rec["diverge_at"] == diverge_index(rec["adapted_ids"], rec["base_ids"])
        assert rec["base"] == tiny_session.tokenizer.decode(rec["base_ids"], skip_special_tokens=True)
        assert len(rec["columns"]["default"]["logprob_delta"]) == len(rec["adapted_ids"])
    assert any(abs(d) > 1e-3 for d in result[0]["columns"]["default"]["logprob_delta"])
    df = result.to_pandas()
    assert list(df.columns) == ["prompt", "base", "default", "diverge_at", "changed"]
    assert df["default"].tolist() == [r["adapted"] for r in result]
    assert f"{result.changed_count} of 2 prompts changed" in result.text()


def test_no_second_copy_of_the_weights(tiny_session):
    """Weight bytes and the set of parameter tensors are identical before, during (each column) and after."""
    perturb(tiny_session)
    add_adapter(tiny_session, "second")
    before = tiny_session.ledger(measure=False)
    ptrs = {p.data_ptr() for p in tiny_session.model.parameters()}
    during: dict[str, list] = {}

    def sample(event):
        if event["kind"] == "compare_token" and event["n_tokens"] == 1:
            led = tiny_session.ledger(measure=False)
            during.setdefault(event["column"], []).append((led.as_dict(), led.params))

    tiny_session.compare(["Hello", "abc"], on_event=sample, **FAST)
    after = tiny_session.ledger(measure=False)
    assert set(during) == {"base", "default", "second"}
    for col, samples in during.items():
        for comps, params in samples:
            assert comps == before.as_dict(), col
            assert params == before.params, col
    assert after.as_dict() == before.as_dict() and after.weight_bytes == before.weight_bytes
    assert {p.data_ptr() for p in tiny_session.model.parameters()} == ptrs


def test_training_still_works_after_compare(tiny_model_dir):
    """Eval-mode generation (the CPU repack trap) must not cut gradients; modes and flags come back."""
    import torch

    ids = torch.tensor([[5, 17, 42, 99, 7, 64, 3, 12]])
    ref = qlora_nb.load(str(tiny_model_dir), seed=1, dropout=0.0)
    perturb(ref, std=0.02)
    state = {n: p.detach().clone() for n, p in lora_params(ref).items()}
    before = grads_after_one_step(ref, ids)

    used = qlora_nb.load(str(tiny_model_dir), seed=1, dropout=0.0)
    with torch.no_grad():
        for n, p in lora_params(used).items():
            p.copy_(state[n])
    used.model.train()
    flags = {n: p.requires_grad for n, p in used.model.named_parameters()}
    result = used.compare(["Hello", "abc"], **FAST)
    assert result.columns == ["base", "default"]
    assert used.model.training and all(m.training for m in used.model.modules())
    assert used.active_adapter == "default"
    assert {n: p.requires_grad for n, p in used.model.named_parameters()} == flags
    after = grads_after_one_step(used, ids)
    assert before and set(after) == set(before)
    for name, g in before.items():
        assert g is not None and after[name] is not None, name
        assert torch.allclose(g, after[name], rtol=1e-3, atol=1e-6), name


def test_compare_and_stream_are_one_generation_path(tiny_session):
    """A prompt compared and the same prompt streamed give the same columns, tokens and marks (one path)."""
    perturb(tiny_session)
    add_adapter(tiny_session, "second")
    rec = tiny_session.compare("Hello", logprobs=True, **FAST)[0]
    events = []
    streamed = tiny_session.stream("Hello", logprobs=True, on_event=events.append, **FAST)
    assert streamed.columns == ["base", "default", "second"]
    keys = ("text", "ids", "tokens", "diff", "diverge_at", "changed", "n_tokens", "logprob_delta")
    for col in streamed.columns:
        assert {k: streamed.cells[col].get(k) for k in keys} == {k: rec["columns"][col].get(k) for k in keys}, col
    assert [e["kind"] for e in events][:1] == ["stream_begin"] and events[-1]["kind"] == "stream_end"
    assert [e["column"] for e in events if e["kind"] == "stream_column"] == streamed.columns
    assert tiny_session.generate("Hello", adapter="second", **FAST) == streamed.cells["second"]["text"]


def test_interrupted_compare_restores_the_model(tiny_session):
    perturb(tiny_session)
    add_adapter(tiny_session, "second")
    tiny_session.model.train()
    flags = {n: p.requires_grad for n, p in tiny_session.model.named_parameters()}

    def stop(event):
        if event["kind"] == "compare_token" and event["column"] == "second":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tiny_session.compare("Hello", on_event=stop, **FAST)
    assert tiny_session.active_adapter == "default" and tiny_session.model.training
    assert {n: p.requires_grad for n, p in tiny_session.model.named_parameters()} == flags


def test_several_adapters_side_by_side(tiny_session):
    perturb(tiny_session)
    add_adapter(tiny_session, "second")
    result = tiny_session.compare("Hello", adapters=["second", "default"], **FAST)
    assert result.columns == ["base", "second", "default"]
    rec = result[0]
    assert rec["adapter"] == "second" and rec["adapted_ids"] == rec["second_ids"]
    for col in ("second", "default"):
        assert rec["columns"][col]["text"] == tiny_session.generate("Hello", adapter=col, **FAST)
    assert rec["base"] == tiny_session.generate("Hello", adapter="base", **FAST)
    assert rec["second_ids"] != rec["default_ids"]
    assert tiny_session.active_adapter == "default"
    # default: every adapter of the session, the active one first
    assert tiny_session.compare("Hello", **FAST).columns == ["base", "default", "second"]
    assert tiny_session.compare("Hello", adapters="base,second", **FAST).columns == ["base", "second"]


def test_same_seed_gives_reproducible_sampling(tiny_session):
    perturb(tiny_session)
    opts = {"max_new_tokens": 8, "sample": True, "temperature": 1.0, "seed": 7}
    a = tiny_session.compare("Hello", **opts)[0]
    b = tiny_session.compare("Hello", **opts)[0]
    assert a["base_ids"] == b["base_ids"] and a["adapted_ids"] == b["adapted_ids"]
    assert tiny_session.generate("Hello", adapter="base", **opts) == a["base"]
    other = tiny_session.compare("Hello", **{**opts, "seed": 8})[0]
    assert other["base_ids"] != a["base_ids"]


def test_prompt_formatting_follows_training(tiny_session):
    from qlora_nb.data.template import ALPACA_NO_INPUT, Template

    tok = tiny_session.tokenizer
    rec = tiny_session.compare("Say hi", **FAST)[0]
    assert rec["formatted"] == tok.apply_chat_template([{"role": "user", "content": "Say hi"}], tokenize=False,
                                                       add_generation_prompt=True)
    assert tiny_session.compare("Say hi", chat=False, **FAST)[0]["formatted"] == "Say hi"
    template = Template.parse(ALPACA_NO_INPUT)
    tiny_session.template = template
    assert tiny_session.compare("Say hi", **FAST)[0]["formatted"] == template.prompt_from_text("Say hi")
    row = {"instruction": "Name a colour.", "output": "Blue."}
    rec = tiny_session.compare([row], **FAST)[0]
    assert rec["formatted"] == template.prompt(row) and rec["reference"] == "Blue."


def test_prompt_tokens_are_the_training_prompt_tokens(tiny_session):
    """Held-out rows reach the model as the very token ids training used for their prompt (labels -100)."""
    from qlora_nb.data.collate import IGNORE, tokenize_rows
    from qlora_nb.data.template import ALPACA_NO_INPUT, PASSTHROUGH, Template, chat_split

    tok = tiny_session.tokenizer
    chat_row = chat_split(tok, [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}])
    cases = [(Template.parse(ALPACA_NO_INPUT), False, {"instruction": "Name a colour.", "output": "Blue."}),
             (Template.parse(PASSTHROUGH), True, chat_row)]
    for template, chat, row in cases:
        tiny_session.template, tiny_session.chat_format = template, chat
        ex = tokenize_rows([row], template, tok, 256, completion_only=True, chat=chat).examples[0]
        trained_prompt = [i for i, label in zip(ex["input_ids"], ex["labels"], strict=True) if label == IGNORE]
        rec = tiny_session.compare([row], max_new_tokens=2)[0]
        assert rec["prompt_ids"] == trained_prompt, template.text


def test_errors_name_the_problem(tiny_session):
    perturb(tiny_session)
    with pytest.raises(QloraError, match="prompt: the prompt is empty"):
        tiny_session.compare("   ", **FAST)
    with pytest.raises(QloraError, match="prompt 1: the prompt is empty"):
        tiny_session.compare(["fine", ""], **FAST)
    with pytest.raises(QloraError, match=r"max_new_tokens=6 .*context window of 256 tokens.*Shorten the prompt to "
                                         r"at most 250 tokens"):
        tiny_session.compare("x" * 300, **FAST)
    with pytest.raises(QloraError, match="no adapter named 'defualt'.*Did you mean 'default'"):
        tiny_session.compare("Hello", adapters=["defualt"], **FAST)
    with pytest.raises(QloraError, match="no adapter named 'nope'"):
        tiny_session.generate("Hello", adapter="nope")
    with pytest.raises(QloraError, match="unknown generation option 'max_tokens'.*max_new_tokens"):
        tiny_session.compare("Hello", max_tokens=4)
    with pytest.raises(QloraError, match="no prompts given"):
        tiny_session.compare([], **FAST)
    assert tiny_session.active_adapter == "default"


# ----------------------------------------------------------------- widget
def test_widget_streams_and_reflects_the_comparison(tiny_session):
    from qlora_nb.views.compare import CompareWidget

    perturb(tiny_session)
    w = CompareWidget.for_session(tiny_session, interval=0.0)
    pushes = []
    w.observe(lambda ch: pushes.append((w.status, ch["new"])), names="rows")
    result = tiny_session.compare(["Hello", "abc"], **FAST)
    streaming = [rows for status, rows in pushes if status == "running"]
    assert any(r["columns"]["base"]["text"] and not r.get("done") for rows in streaming for r in rows)
    assert w.status == "done" and w.columns == ["base", "default"]
    assert w.total == 2 and w.changed_count == result.changed_count
    assert [r["columns"]["default"]["ids"] for r in w.rows] == [r["adapted_ids"] for r in result]
    assert f"{result.changed_count} of 2 prompts changed" in w.text() and "DEFAULT" in w.text()
    assert len(tiny_session.events) == 0  # it listens to one comparison only

    again = CompareWidget.from_result(result)
    assert again.rows == w.rows and again.text() == w.text()
    bundle, _ = again._repr_mimebundle_()
    assert "prompts changed" in bundle["text/plain"]


# ------------------------------------------------------------------ magic
@pytest.fixture
def shell():
    from IPython.testing.globalipapp import get_ipython, start_ipython

    ip = start_ipython() or get_ipython()  # one global shell per process
    ip.run_line_magic("load_ext", "qlora_nb")
    yield ip
    ip.run_line_magic("unload_ext", "qlora_nb")


def test_magic_binds_result_and_accepts_variables(shell, tiny_session, capsys):
    perturb(tiny_session)
    shell.user_ns["qlora"] = tiny_session
    shell.run_line_magic("qlora_compare", '"Hello there" --max-new-tokens 4 --seed 3')
    res = shell.user_ns["compare_result"]
    assert isinstance(res, CompareResult) and res[0]["prompt"] == "Hello there"
    assert res.options["max_new_tokens"] == 4 and res.options["seed"] == 3
    shell.user_ns["qs"] = ["Hello", "abc"]
    shell.run_line_magic("qlora_compare", "$qs --max-new-tokens 3 --adapters default -o out")
    assert [r["prompt"] for r in shell.user_ns["out"]] == ["Hello", "abc"]
    assert "prompts changed" in capsys.readouterr().out


def test_magic_errors(shell, tiny_session):
    shell.user_ns["qlora"] = tiny_session
    cases = [
        ("--data val --n 2", "no validation rows"),
        ("", "no prompt given"),
        ('"hi" --max-new-tokens zero', "'zero' is not a valid value for max_new_tokens"),
        ('"hi" --adapters secnd', "no adapter named 'secnd'"),
        ('"hi" --session other', "no session named 'other'"),
        ("$missing", "no variable named 'missing'"),
    ]
    for line, message in cases:
        with pytest.raises(QloraError, match=message):
            shell.run_line_magic("qlora_compare", line)


def test_magic_data_val_uses_held_out_rows(shell, tiny_session):
    from qlora_nb.data.template import ALPACA_NO_INPUT, Template

    perturb(tiny_session)
    tiny_session.template = Template.parse(ALPACA_NO_INPUT)
    tiny_session.val_rows = [{"instruction": f"Task {i}", "output": f"Answer {i}"} for i in range(3)]
    shell.user_ns["qlora"] = tiny_session
    shell.run_line_magic("qlora_compare", "--data val --n 2 --max-new-tokens 3")
    res = shell.user_ns["compare_result"]
    assert [r["reference"] for r in res] == ["Answer 0", "Answer 1"]
    assert res[0]["formatted"] == tiny_session.template.prompt(tiny_session.val_rows[0])


# ------------------------------------------------------------ integration
@pytest.mark.integration
def test_base_column_is_the_base_model_token_for_token(demo_session_factory):
    """Greedy base outputs equal a freshly loaded model without any adapter, with a non-trivial adapter attached."""
    import torch

    from qlora_nb.engine.model.quantize import load_base

    session = demo_session_factory()
    perturb(session, std=0.05)
    before = session.ledger(measure=False).weight_bytes
    prompts = ["What is the capital of France?", "Write a haiku about the sea."]
    result = session.compare(prompts, max_new_tokens=8)
    assert session.ledger(measure=False).weight_bytes == before
    assert result.columns == ["base", "default"] and result.changed_count >= 1

    plain = load_base(session.model_path, session.config, session.device)
    assert not hasattr(plain, "peft_config")
    plain.eval()
    for rec in result:
        ids = torch.tensor([rec["prompt_ids"]])
        with torch.no_grad():
            out = plain.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                                 do_sample=False, pad_token_id=session.tokenizer.pad_token_id)
        assert out[0, ids.shape[1]:].tolist() == rec["base_ids"]
