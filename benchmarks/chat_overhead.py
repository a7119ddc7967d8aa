"""What generating the chat columns together costs, against plain transformers + peft generates one after another.

Same process, same model, same prompt: the plain recipe (``with disable_adapter()`` for the base, then the adapter,
one ``model.generate`` each, greedy, a fixed number of new tokens) alternates with ``session.chat`` (the columns in
lockstep, one ``generate`` call per token with the column's cache handed back). Both produce the same tokens (the
script checks it); the figure is the ratio of wall times, best of ``--repeats``.

    PYTHONPATH=. .venv/bin/python benchmarks/chat_overhead.py [--model smollm2-135m] [--tokens 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from common import report_json  # noqa: E402  (run as a script from benchmarks/)

MESSAGES = [{"role": "user", "content": "Tell me a long story about a cat who learns to sail."}]


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch

    import qlora_nb

    s = qlora_nb.load(args.model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a stand-in for a trained adapter: non-zero B so the adapter column really differs
        for n, p in s.model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.01)
    tok, model = s.tokenizer, s.model
    ids = tok(tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True),
              add_special_tokens=False)["input_ids"]
    n = args.tokens

    def plain() -> tuple[float, dict[str, list[int]]]:
        model.eval()
        outs = {}
        started = time.perf_counter()
        for column in ("base", "default"):
            ctx = model.disable_adapter() if column == "base" else contextlib.nullcontext()
            x = torch.tensor([ids])
            torch.manual_seed(0)
            with ctx, torch.no_grad():
                out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n,
                                     min_new_tokens=n, do_sample=False, temperature=None, top_p=None, top_k=None,
                                     pad_token_id=tok.pad_token_id)
            outs[column] = out[0, len(ids):].tolist()
        return time.perf_counter() - started, outs

    def together() -> tuple[float, dict[str, list[int]]]:
        started = time.perf_counter()
        # min_new_tokens is not a chat option: a long story keeps both columns under eos for --tokens tokens
        r = s.chat(MESSAGES, max_new_tokens=n)
        return time.perf_counter() - started, {c: r.cells[c]["ids"] for c in r.columns}

    plain()  # warm-up (first eval forward repacks the 4-bit weights on CPU)
    rows = []
    for _ in range(args.repeats):
        tp, op = plain()
        tc, oc = together()
        same = all(oc[c] == op[c][: len(oc[c])] for c in oc)
        rows.append({"plain_s": round(tp, 3), "together_s": round(tc, 3),
                     "tokens": {c: len(v) for c, v in oc.items()}, "same_tokens": same})
    best_p, best_c = min(r["plain_s"] for r in rows), min(r["together_s"] for r in rows)
    result = {"model": args.model, "cpu": cpu_name(), "threads": torch.get_num_threads(), "new_tokens": n,
              "runs": rows, "plain_best_s": best_p, "together_best_s": best_c,
              "ratio": round(best_c / best_p, 3), "all_same_tokens": all(r["same_tokens"] for r in rows)}
    report_json(result, args.out)


if __name__ == "__main__":
    main()
