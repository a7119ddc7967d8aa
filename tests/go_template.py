"""A renderer for the Go text/template subset qlora_nb's Modelfiles use, written independently of the exporter.

Supported: literal text, ``{{ range .Messages }}…{{ end }}``, ``{{ .Role }}``,
``{{ .Content }}``, and ``{{ if eq .Role "x" }}…{{ else if eq .Role "y" }}…{{ else }}…{{ end }}``.
Anything else raises, so a template the exporter starts emitting differently
fails the test instead of being rendered wrongly.
"""

from __future__ import annotations

import re

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)


def _tokens(template: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    for m in _ACTION.finditer(template):
        if "{{-" in m.group(0) or "-}}" in m.group(0):
            raise ValueError("trim markers are not in the supported subset")
        if m.start() > pos:
            out.append(("text", template[pos:m.start()]))
        out.append(("action", m.group(1)))
        pos = m.end()
    if pos < len(template):
        out.append(("text", template[pos:]))
    return out


def _parse(tokens, i=0, stop=("end",)):
    """Nodes until an action in ``stop``; returns (nodes, index of the stop action)."""
    nodes = []
    while i < len(tokens):
        kind, val = tokens[i]
        if kind == "text":
            nodes.append(("text", val))
            i += 1
            continue
        if val == "end" or val == "else" or val.startswith("else if "):
            if val.split(" ")[0] in stop or val in stop:
                return nodes, i
            raise ValueError(f"unexpected {{{{ {val} }}}}")
        if val == "range .Messages":
            body, i = _parse(tokens, i + 1, ("end",))
            nodes.append(("range", body))
            i += 1
        elif val.startswith("if "):
            branches = []
            cond = val[3:]
            while True:
                body, i = _parse(tokens, i + 1, ("end", "else"))
                branches.append((cond, body))
                action = tokens[i][1]
                if action == "end":
                    break
                cond = action[len("else if "):] if action.startswith("else if ") else None
            nodes.append(("if", branches))
            i += 1
        elif val in (".Role", ".Content"):
            nodes.append(("field", val[1:]))
            i += 1
        else:
            raise ValueError(f"unsupported action {{{{ {val} }}}}")
    return nodes, i


def _true(cond: str | None, message: dict) -> bool:
    if cond is None:
        return True
    m = re.fullmatch(r'eq \.Role "([^"]*)"', cond)
    if not m:
        raise ValueError(f"unsupported condition {cond!r}")
    return message["role"] == m.group(1)


def _run(nodes, messages, message=None) -> str:
    out = []
    for kind, val in nodes:
        if kind == "text":
            out.append(val)
        elif kind == "field":
            out.append(message["role" if val == "Role" else "content"])
        elif kind == "range":
            out.extend(_run(val, messages, m) for m in messages)
        elif kind == "if":
            for cond, body in val:
                if _true(cond, message):
                    out.append(_run(body, messages, message))
                    break
    return "".join(out)


def render(template: str, messages: list[dict], system: str | None = None) -> str:
    """What Ollama renders: its SYSTEM goes first when the chat has no system message."""
    if system is not None and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": system}, *messages]
    nodes, _ = _parse(_tokens(template))
    return _run(nodes, messages)


def modelfile_parts(text: str) -> dict[str, str | list[str]]:
    """FROM, TEMPLATE, SYSTEM and the PARAMETER lines of a Modelfile."""
    out: dict = {"PARAMETER": []}
    for key in ("TEMPLATE", "SYSTEM"):
        m = re.search(key + r' """(.*?)"""', text, re.S)
        if m:
            out[key] = m.group(1)
    m = re.search(r"^FROM (.+)$", text, re.M)
    out["FROM"] = m.group(1) if m else None
    out["PARAMETER"] = re.findall(r"^PARAMETER (.+)$", text, re.M)
    return out
