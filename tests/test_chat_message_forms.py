"""``session.chat`` reads one message dict as a one-message conversation (not per-column histories), refuses a dict
that mixes message keys with column names, and ``adapters=["base"]`` on a trained session says the base was asked."""

from __future__ import annotations

import pytest
from adapter_helpers import perturb

from qlora_nb.errors import QloraError


@pytest.fixture
def trained(tiny_session):
    import conftest

    tiny_session.tokenizer.chat_template = conftest.CHAT_TEMPLATE
    perturb(tiny_session, None, std=0.5, seed=1)
    return tiny_session


@pytest.mark.parametrize("message", [{"role": "user", "content": "Hi!"}, {"content": "Hi!", "role": "user"}])
def test_one_message_dict_is_the_conversation_of_that_message(trained, message):
    one = trained.chat(message, max_new_tokens=4)
    listed = trained.chat([{"role": "user", "content": "Hi!"}], max_new_tokens=4)
    assert one.mode == "chat" and one.replies == listed.replies and one.columns == ["base", "default"]


@pytest.mark.parametrize(("message", "match"), [
    ({"role": "user"}, r"messages\[0\]: message 0 \(user\) has no content"),
    ({"role": "robot", "content": "Hi"}, r"message 0 has role 'robot'"),
    ({"role": "user", "content": "Hi", "base": []}, r"has the message keys 'role'/'content' and also 'base'"),
])
def test_a_bad_single_message_names_the_message_not_a_column(trained, message, match):
    with pytest.raises(QloraError, match=match) as info:
        trained.chat(message, max_new_tokens=2)
    assert "column 'role'" not in str(info.value)


@pytest.mark.parametrize("adapters", [["base"], "base"])
def test_only_the_base_asked_for_on_a_trained_session_is_said_as_such(trained, adapters):
    reply = trained.chat([{"role": "user", "content": "Hi!"}], adapters=adapters, max_new_tokens=2)
    assert reply.columns == ["base"]
    assert any("only the base was asked for" in n and "default" in n for n in reply.notes)
    assert not any("no adapter yet" in n for n in reply.notes)
