"""An Ollama ``Modelfile`` whose TEMPLATE renders what the tokenizer's chat template renders.

Rather than a table of hand-written templates per family, the tokenizer's own
Jinja template is rendered on a sentinel conversation and cut into its parts:
a head, one prefix per role, the one suffix every message ends with, and the
generation prompt. Templates of that shape (ChatML as in SmolLM/Qwen, Llama 3's
header format) become a Go template with one ``range .Messages``; a default
system prompt that the Jinja template inserts becomes the Modelfile's
``SYSTEM`` (Ollama prepends it when a chat has no system message). The parts are
then checked by rendering a second, different conversation both ways; a template
of any other shape is refused rather than approximated, because a wrong
TEMPLATE is exactly the "exported model talks gibberish" failure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ...errors import QloraError

_S = ("QZSYSQZ", "QZU1QZ", "QZA1QZ", "QZU2QZ")  # sentinel contents: plain letters every tokenizer keeps as is


@dataclass(frozen=True)
class ChatParts:
    head: str
    prefix: dict[str, str]  # role -> text before its content
    suffix: str  # after every message's content
    generation: str  # after the last message, to start the assistant's turn
    default_system: str | None

    def render(self, messages: list[dict[str, str]]) -> str:
        """What the Go template renders for ``messages`` (Ollama adds SYSTEM first when there is none)."""
        if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.default_system}, *messages]
        body = "".join(self.prefix.get(m["role"], self.prefix["assistant"]) + m["content"] + self.suffix
                       for m in messages)
        return self.head + body + self.generation

    def go_template(self) -> str:
        branches = (f'{{{{ if eq .Role "system" }}}}{self.prefix["system"]}'
                    f'{{{{ else if eq .Role "user" }}}}{self.prefix["user"]}'
                    f'{{{{ else }}}}{self.prefix["assistant"]}{{{{ end }}}}')
        return f"{self.head}{{{{ range .Messages }}}}{branches}{{{{ .Content }}}}{self.suffix}{{{{ end }}}}{self.generation}"


def _render(tokenizer, messages) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _unsupported(why: str) -> QloraError:
    return QloraError(f"the tokenizer's chat template cannot be written as an Ollama TEMPLATE ({why}).",
                      where="--format ollama",
                      hint="Supported: templates of the ChatML (SmolLM, Qwen) and Llama 3 shape. Export with "
                           "--format gguf (llama.cpp reads the chat template inside the file) instead.")


def _common_prefix(texts: list[str]) -> str:
    first = texts[0]
    n = 0
    while n < len(first) and all(len(t) > n and t[n] == first[n] for t in texts):
        n += 1
    return first[:n]


def chat_parts(tokenizer) -> ChatParts:
    """Cut the tokenizer's chat template into head / role prefixes / suffix / generation prompt, checked."""
    if not isinstance(getattr(tokenizer, "chat_template", None), str):
        raise _unsupported("the tokenizer has no chat template")
    sys_, u1, a1, u2 = _S
    full = _render(tokenizer, [{"role": "system", "content": sys_}, {"role": "user", "content": u1},
                               {"role": "assistant", "content": a1}, {"role": "user", "content": u2}])
    if any(full.count(s) != 1 for s in _S):
        raise _unsupported("it does not render each message's content once, as written")
    cut = [full.index(s) for s in _S]
    segs = [full[:cut[0]]] + [full[cut[i] + len(_S[i]):cut[i + 1]] for i in range(3)] + [full[cut[3] + len(u2):]]
    suffix = _common_prefix(segs[1:])
    user, assistant, user2, generation = (s[len(suffix):] for s in segs[1:])
    if user != user2 or not generation:
        raise _unsupported("user turns are not rendered alike")
    no_sys = _render(tokenizer, [{"role": "user", "content": u1}, {"role": "assistant", "content": a1},
                                 {"role": "user", "content": u2}])
    lead = no_sys[:no_sys.index(u1)]
    if not lead.endswith(user):
        raise _unsupported("the first user turn is rendered differently from later ones")
    lead = lead[:-len(user)]
    system = user.replace("user", "system", 1)
    if not segs[0].endswith(system):
        raise _unsupported("the system turn is not rendered like a user turn")
    head = segs[0][:-len(system)]
    default = None
    if lead != head:  # the template adds a system message of its own when the chat has none
        if not (lead.startswith(segs[0]) and lead.endswith(suffix)):
            raise _unsupported("it adds text before a chat without a system message that is not a system turn")
        default = lead[len(segs[0]):len(lead) - len(suffix)]
    # Move the part of the suffix that opens the next turn (e.g. "<|im_start|>") into the role prefixes.
    overlap = next((suffix[i:] for i in range(len(suffix)) if head.endswith(suffix[i:])), "")
    if overlap:
        suffix, head = suffix[:-len(overlap)], head[:-len(overlap)]
        user, assistant, system, generation = (overlap + p for p in (user, assistant, system, generation))
    parts = ChatParts(head, {"system": system, "user": user, "assistant": assistant}, suffix, generation, default)
    sample = [{"role": "user", "content": "Hi!\nWhat is 2+2?"}, {"role": "assistant", "content": "4."},
              {"role": "user", "content": "And 3+3? Answer in words."}]
    for convo in (sample, [{"role": "system", "content": "Be brief."}, *sample]):
        if parts.render(convo) != _render(tokenizer, convo):
            raise _unsupported("the parts found do not reproduce it on a test conversation")
    return parts


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def modelfile_text(tokenizer, gguf_name: str, num_ctx: int | None = None, base_only: bool = False) -> str:
    """``FROM``, ``TEMPLATE``, ``SYSTEM`` (the template's default), ``PARAMETER stop`` lines and the context size.

    ``base_only``: the file is the session's base; a commented ``ADAPTER`` line says where a GGUF LoRA goes.
    """
    parts = chat_parts(tokenizer)
    head = parts.head
    bos = getattr(tokenizer, "bos_token", None)
    adds_bos = bool(bos) and tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id]
    if adds_bos and head.startswith(bos):  # llama.cpp adds BOS itself (tokenizer.ggml.add_bos_token); not twice
        head = head[len(bos):]
    template = ChatParts(head, parts.prefix, parts.suffix, parts.generation, parts.default_system).go_template()
    if '"""' in template:
        raise _unsupported('it contains """, which a Modelfile cannot quote')
    stops = []
    for text in (tokenizer.eos_token, parts.suffix.strip(), *(parts.prefix[r].strip() for r in ("user", "system"))):
        special = text in {t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values()}
        if text and (text == tokenizer.eos_token or special) and text not in stops:
            stops.append(text)
    lines = [f"FROM ./{gguf_name}", "", f'TEMPLATE """{template}"""']
    if parts.default_system is not None:
        lines.append(f'SYSTEM """{parts.default_system}"""')
    lines.append("")
    lines += [f"PARAMETER stop {_quote(s)}" for s in stops]
    if num_ctx:
        lines.append(f"PARAMETER num_ctx {int(num_ctx)}")
    if base_only:
        lines += ["", "# The base as the session holds it. To serve an adapter on it, save the adapter with",
                  "# %qlora_save DIR --format gguf, copy NAME-lora.gguf here and uncomment:",
                  "# ADAPTER ./NAME-lora.gguf"]
    return "\n".join(lines) + "\n"
