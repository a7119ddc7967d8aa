"""The chat playground without a browser: turns, both history modes, regenerate / edit / clear, "Copy as cell"
reproducing the reply, errors shown and cleared, completion mode for a tokenizer without a chat template, the magic.

Tiny random model (CPU, seconds).
"""

from __future__ import annotations

import pytest
from adapter_helpers import add_adapter, perturb

import qlora_nb
from qlora_nb.errors import QloraError


@pytest.fixture
def chat(tiny_session):
    from qlora_nb.views.chat import Chat

    perturb(tiny_session, "default")
    w = Chat(tiny_session, session_name="qlora", interval=0.0)
    w.options = {**w.options, "max_new_tokens": 6}
    return w


def _replies(w, turn=-1):
    return {c: cell["text"] for c, cell in w.turns[turn]["cells"].items()}


def test_two_turns_same_history_every_column_sees_the_first_columns_answer(chat):
    r1 = chat.send("Capital of France?")
    assert chat.status == "done" and chat.columns == ["base", "default"] and len(chat.turns) == 1
    assert r1.replies == _replies(chat) and all(c["done"] for c in chat.turns[0]["cells"].values())
    r2 = chat.send("And of Italy?")
    assert len(chat.turns) == 2 and r2.mode == "chat"
    expected = chat.session.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": r1.replies["base"]},
         {"role": "user", "content": "And of Italy?"}], tokenize=False, add_generation_prompt=True)
    assert chat.rendered == {"base": expected, "default": expected}


def test_own_history_each_column_continues_its_own_conversation(chat):
    chat.history = "own"
    chat.system = "Be brief."
    r1 = chat.send("Capital of France?")
    r2 = chat.send("And of Italy?")
    assert r2.mode == "own"
    for c in ("base", "default"):
        msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
                {"role": "assistant", "content": r1.replies[c]}, {"role": "user", "content": "And of Italy?"}]
        assert chat.rendered[c] == chat.session.tokenizer.apply_chat_template(msgs, tokenize=False,
                                                                              add_generation_prompt=True)


def test_copy_as_cell_reproduces_the_last_reply(chat, tiny_session):
    add_adapter(tiny_session, "other")
    chat.chosen = ["default"]
    chat.options = {**chat.options, "max_new_tokens": "5"}  # the text box sends strings
    chat.send("Capital of France?")
    last = chat.send("And of Italy?")
    code = chat.to_code()
    assert code.startswith("reply = qlora.chat(") and "adapters=['default']" in code and "max_new_tokens=5" in code
    ns = {"qlora": tiny_session}
    exec(code.replace("print(reply)", ""), ns)
    assert ns["reply"].replies == last.replies and ns["reply"].prompt == last.prompt
    chat.history = "own"
    chat.regenerate()
    ns = {"qlora": tiny_session}
    exec(chat.to_code().replace("print(reply)", ""), ns)
    assert ns["reply"].mode == "own" and ns["reply"].replies == chat.result.replies


def test_regenerate_edit_and_clear(chat):
    chat.send("one")
    chat.send("two")
    first = _replies(chat, 0)
    chat.options = {**chat.options, "sample": True, "seed": 5}
    chat.regenerate()
    assert len(chat.turns) == 2 and _replies(chat, 0) == first  # only the last turn is generated again
    chat.edit(0, "uno")
    assert [t["user"] for t in chat.turns] == ["uno"] and chat.status == "done"
    chat.clear()
    assert chat.turns == [] and chat.rendered == {} and chat.code == "" and chat.status == "idle"
    assert chat.regenerate() is None and "no reply yet" in chat.error
    assert chat.edit(3, "x") is None and "no message 3" in chat.error


def test_errors_are_shown_at_once_and_cleared(chat):
    assert chat.send("  ") is None and chat.status == "error" and chat.error.startswith("message box")
    chat.prompt = "hello"
    assert chat.error == ""  # typing clears the empty-message error
    chat.options = {**chat.options, "max_new_tokens": "0"}
    assert "chat option 'max_new_tokens'" in chat.error  # found when typed, not on Send
    chat.options = {**chat.options, "max_new_tokens": "4"}
    assert chat.error == ""


def test_a_failed_send_puts_the_turns_and_the_message_back(chat):
    chat.send("hi")
    turns = chat.turns
    chat.options = {**chat.options, "max_new_tokens": 250}  # with the prompt, past the tiny model's 256 tokens
    assert chat.send("again") is None
    assert "context window" in chat.error and chat.turns == turns and chat.prompt == "again"


def test_no_chat_template_gives_completion_mode_and_says_why(tiny_session):
    from qlora_nb.views.chat import Chat
    from qlora_nb.views.playground import Playground

    tiny_session.tokenizer.chat_template = None
    w = Chat(tiny_session)
    assert w.mode == "completion" and not w.can_chat and "no chat template" in w.notes[0]
    w.mode = "chat"
    assert w.mode == "completion"  # the toggle cannot switch to chat
    w.options = {**w.options, "max_new_tokens": 4}
    r = w.send("Q: 1 plus 1")
    assert r.mode == "completion" and w.rendered["base"] == "Q: 1 plus 1" and "compare(" in w.to_code()
    assert "no chat template" in w.text()
    assert isinstance(qlora_nb.playground(tiny_session), Playground)  # the default without a template


def test_magic_flags_and_twin(tiny_session):
    from IPython.core.interactiveshell import InteractiveShell

    from qlora_nb.views.chat import Chat
    from qlora_nb.views.playground import Playground

    shell = InteractiveShell()
    try:
        shell.run_line_magic("load_ext", "qlora_nb")
        shell.user_ns.update(qlora=tiny_session)
        shell.run_line_magic("qlora_playground", "--chat --history own -o c")
        assert isinstance(shell.user_ns["c"], Chat) and shell.user_ns["c"].history == "own"
        shell.run_line_magic("qlora_playground", "--completion")
        assert isinstance(shell.user_ns["playground"], Playground)
        shell.run_line_magic("qlora_playground", "")  # a chat template, nothing trained on a plain template
        assert isinstance(shell.user_ns["playground"], Chat)
        shell.user_ns.pop("playground")
        with pytest.raises(QloraError, match="--chat and --completion exclude each other"):
            shell.run_line_magic("qlora_playground", "--chat --completion")
        assert "playground" not in shell.user_ns
    finally:
        InteractiveShell.clear_instance()
    assert isinstance(qlora_nb.playground(tiny_session, chat=True, history="own"), Chat)


def test_text_fallback_shows_the_columns(chat):
    assert "type a message" in chat.text()
    chat.send("hi")
    text = chat._repr_mimebundle_()[0]["text/plain"]
    assert "BASE" in text and "DEFAULT" in text and "1 turn" in text
