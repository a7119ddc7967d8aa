"""session.chat: the rendered prompt is the tokenizer's own, each column's reply is a plain generate with that
adapter, the columns advance together, and bad conversations are one paragraph naming the message.

Tiny random model for the engine (seconds); the demo model's tokenizer (SmolLM2) for the template equality.
"""

from __future__ import annotations

import contextlib

import pytest
from adapter_helpers import add_adapter, perturb
from conftest import demo_model_available

from qlora_nb.errors import QloraError


@pytest.fixture
def two_adapters(tiny_session):
    perturb(tiny_session, "default")
    add_adapter(tiny_session, "other")
    tiny_session.model.set_adapter("default")
    return tiny_session


def _template_ids(tok, messages) -> list[int]:
    out = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    if hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out[0] if out and isinstance(out[0], list) else out)


def _plain_generate(session, ids, adapter, max_new_tokens, sample=False, seed=0):
    """transformers + peft as a user would write it: one adapter (or none), seed, generate."""
    import torch

    model, tok = session.model, session.tokenizer
    model.eval()
    ctx = model.disable_adapter() if adapter == "base" else contextlib.nullcontext()
    if adapter != "base":
        model.set_adapter(adapter)
    kw = dict(do_sample=True, temperature=0.7, top_p=0.95) if sample else dict(do_sample=False, temperature=None,
                                                                               top_p=None, top_k=None)
    x = torch.tensor([ids])
    torch.manual_seed(seed)
    with ctx, torch.no_grad():
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                             eos_token_id=[tok.eos_token_id], pad_token_id=tok.pad_token_id, **kw)
    return [int(t) for t in out[0, len(ids):]]


CONVERSATION = [{"role": "system", "content": "You answer in one word."},
                {"role": "user", "content": "Capital of France?"},
                {"role": "assistant", "content": "Paris."},
                {"role": "user", "content": "And of Italy?"}]


# ------------------------------------------------------------------ correctness
@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampled"])
def test_each_column_equals_a_plain_generate_with_its_adapter(two_adapters, sample):
    s = two_adapters
    result = s.chat(CONVERSATION, max_new_tokens=12, sample=sample, seed=3)
    assert result.columns == ["base", "default", "other"]
    ids = _template_ids(s.tokenizer, CONVERSATION)
    for column in result.columns:
        assert result.cells[column]["ids"] == _plain_generate(s, ids, column, 12, sample, seed=3), column
        assert result.replies[column] == s.tokenizer.decode(result.cells[column]["ids"], skip_special_tokens=True)
    assert len({tuple(result.cells[c]["ids"]) for c in result.columns}) == 3  # the adapters really differ
    assert result.prompt_tokens == dict.fromkeys(result.columns, len(ids))
    assert result.reply_tokens == {c: len(result.cells[c]["ids"]) for c in result.columns}


def test_columns_fill_together_token_by_token(two_adapters):
    events = []
    two_adapters.chat(CONVERSATION, max_new_tokens=6, on_event=events.append)
    order = [(e["column"], e["n_tokens"]) for e in events if e["kind"] == "chat_token"]
    # round robin: every column has its first token before any column has its second
    first_second = min(i for i, (_, n) in enumerate(order) if n == 2)
    assert {c for c, n in order[:first_second] if n == 1} == {"base", "default", "other"}, order
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "chat_begin" and kinds[-1] == "chat_end"


def test_state_is_restored_and_training_unaffected(two_adapters):
    from qlora_nb.engine.rollback import fingerprint

    s = two_adapters
    s.model.train()
    before = fingerprint(s)
    s.chat(CONVERSATION, max_new_tokens=4)
    assert fingerprint(s) == before
    assert s.model.training and s.model.active_adapter == "default"
    layers = [m for m in s.model.modules() if hasattr(m, "disable_adapters") and hasattr(m, "lora_A")]
    assert layers and not any(m.disable_adapters for m in layers)  # the base column re-enabled the adapters


def test_two_turns_same_and_own_history(two_adapters):
    s = two_adapters
    first = s.chat(CONVERSATION[:2], max_new_tokens=5, adapters=["default"])
    assert first.columns == ["base", "default"]
    turn2 = first.conversation("base") + [{"role": "user", "content": "Why?"}]
    same = s.chat(turn2, max_new_tokens=5, adapters=["default"])
    assert same.prompts["base"] == same.prompts["default"] == s.tokenizer.apply_chat_template(
        turn2, tokenize=False, add_generation_prompt=True)
    assert first.replies["base"] in same.prompt
    own = s.chat({c: first.conversation(c) + [{"role": "user", "content": "Why?"}] for c in first.columns},
                 max_new_tokens=5)
    assert own.mode == "own" and own.columns == ["base", "default"]
    for c in own.columns:
        assert own.prompts[c] == s.tokenizer.apply_chat_template(first.conversation(c) + [turn2[-1]],
                                                                 tokenize=False, add_generation_prompt=True)
    # the own-history base reply is the same-history one (identical context); the adapter's context differs
    assert own.replies["base"] == same.replies["base"]
    if first.replies["default"] != first.replies["base"]:
        assert own.prompts["default"] != own.prompts["base"]


def test_text_form_and_events_carry_the_reply(two_adapters):
    result = two_adapters.chat(CONVERSATION, max_new_tokens=4, adapters="other")
    text = repr(result)
    assert "BASE" in text and "OTHER" in text and "user: And of Italy?" in text
    assert str(result) == text
    assert result.to_event()["replies"] == result.replies


@pytest.mark.skipif(not demo_model_available(), reason="demo model not in the cache (make model)")
def test_demo_prompt_is_apply_chat_template_and_replies_are_plain_generates(demo_session_factory):
    s = demo_session_factory()
    perturb(s, "default", std=0.02)
    for messages in (CONVERSATION[1:2], CONVERSATION, CONVERSATION[1:]):
        result = s.chat(messages, max_new_tokens=6)
        expected = s.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert result.prompt == expected and result.prompt.endswith("<|im_start|>assistant\n")
        assert ("You answer in one word." in result.prompt) == (messages[0]["role"] == "system")
        # the ids the model saw are the template's own tokenization (no doubled BOS, nothing added)
        ids = _template_ids(s.tokenizer, messages)
        assert result.prompt_tokens == {"base": len(ids), "default": len(ids)}
    for column in ("base", "default"):  # the real 4-bit path: same tokens as transformers + peft alone
        assert result.cells[column]["ids"] == _plain_generate(s, ids, column, 6), column


# ------------------------------------------------------------------ bad input
BAD = [
    ([], "no messages", "messages"),
    ([{"role": "system", "content": "Be brief."}], "only a system message", "messages"),
    ([{"role": "bot", "content": "hi"}], "role 'bot'", "messages[0]"),
    ([{"content": "hi"}], "no role", "messages[0]"),
    ([{"role": "assistant", "content": "Hello"}, {"role": "user", "content": "hi"}], "the first turn", "messages[0]"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "follows message 0 (user)", "messages[1]"),
    ([{"role": "user", "content": "   "}], "message 0 (user) is empty", "messages[0]"),
    ([{"role": "user", "content": None}], "no content", "messages[0]"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "system message after", "messages[1]"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "is the assistant's", "messages[1]"),
    (["hello"], "message 0 is a str", "messages[0]"),
    ("hello", "a list of messages, got str", "messages"),
    ({"base": [{"role": "user", "content": "ok"}], "default": [{"role": "user", "content": ""}]},
     "message 0 (user) is empty", "messages['default'][0]"),
    ({"nope": [{"role": "user", "content": "ok"}]}, "no adapter named 'nope'", "--adapters"),
]


@pytest.mark.parametrize(("messages", "says", "where"), BAD, ids=[b[1] for b in BAD])
def test_bad_conversations_are_one_paragraph_naming_the_message(tiny_session, messages, says, where):
    from qlora_nb.engine.rollback import fingerprint

    before = fingerprint(tiny_session)
    with pytest.raises(QloraError) as info:
        tiny_session.chat(messages, max_new_tokens=2)
    msg = str(info.value)
    assert says in msg and info.value.where == where and "\n" not in msg, msg
    assert fingerprint(tiny_session) == before


def test_options_are_named_as_chat_options(tiny_session):
    with pytest.raises(QloraError, match="chat option 'max_new_tokens'"):
        tiny_session.chat(CONVERSATION, max_new_tokens=0)
    with pytest.raises(QloraError, match="'chat' is not an option"):
        tiny_session.chat(CONVERSATION, chat=False)
    with pytest.raises(QloraError, match="adapters is given twice"):
        tiny_session.chat({"base": CONVERSATION}, adapters=["default"])


def test_no_chat_template_says_why_and_offers_completion(tiny_session):
    tiny_session.tokenizer.chat_template = None
    with pytest.raises(QloraError) as info:
        tiny_session.chat(CONVERSATION[1:2])
    msg = str(info.value)
    assert "no chat template" in msg and "completion mode" in msg and "--completion" in msg


def test_template_refusal_is_one_paragraph(tiny_session):
    tiny_session.tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(QloraError, match="chat template refused this conversation: System role not supported"):
        tiny_session.chat(CONVERSATION)


def test_prompt_longer_than_the_context_window_is_named(tiny_session):
    long = [{"role": "user", "content": "x" * 400}]  # the tiny model's window is 256 tokens
    with pytest.raises(QloraError, match="context window") as info:
        tiny_session.chat(long, max_new_tokens=8)
    assert info.value.where == "messages"


def test_stop_ends_every_column_where_it_is(two_adapters):
    from qlora_nb.engine.generation.chat import chat

    seen = []
    result = chat(two_adapters, CONVERSATION, max_new_tokens=20, on_event=seen.append,
                  should_stop=lambda: sum(e["kind"] == "chat_token" for e in seen) >= 4)
    assert sum(result.reply_tokens.values()) == 4 and result.reply_tokens["base"] == 2
    layers = [m for m in two_adapters.model.modules() if hasattr(m, "disable_adapters") and hasattr(m, "lora_A")]
    assert not any(m.disable_adapters for m in layers)  # stopped after the base's turn: adapters enabled again
