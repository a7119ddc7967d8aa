"""The exported GGUF files checked by llama.cpp itself (``make llamacpp-check``), not by transformers reading them back.

The demo model is trained briefly with a fixed seed, then every file the
toolkit writes for llama.cpp is exported from that session:

* ``merged-f16``, ``merged-q8_0``: ``session.merge(DIR, format="gguf", outtype=...)``;
* ``ollama-q8_0``: ``format="ollama"`` (the GGUF beside its Modelfile);
* ``base-f16``: ``base_only=True``, the base as the session holds it (NF4 dequantized), compared with the
  session's base (adapters off);
* ``base-f16+lora``: that base with the GGUF LoRA (``save(DIR, format="gguf")``) applied by llama.cpp.

Each is loaded by ``llama-cpp-python`` (``Llama(model_path, lora_path)``) through the toolkit's own
``--engine llama.cpp`` column (:class:`qlora_nb.engine.generation.llamacpp.LlamaCppModel`), and on N held-out
demo prompts it checks: the prompt ids llama.cpp's tokenizer gives (BOS as the file states) equal the session's;
the greedy continuation equals the session's token for token; the chat template and EOS id in the file's
metadata equal the session tokenizer's. Where a continuation differs, the logits of both at the first differing
position are compared (:func:`first_difference`): a near-tie within the export's own logit bar is reported as
drift, not as a failure. Load time and tokens/s sit next to the session's.

    PYTHONPATH=~/.cache/qlora_nb/llamacpp-lib python benchmarks/llamacpp_check.py [--prompts 4] [--steps 30]

Writes ``benchmarks/results/llamacpp-check-<machine>-<date>.json``; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import fingerprint  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def held_out_prompts(n: int) -> list[str]:
    """The first ``n`` held-out demo prompts, rendered by the training template (as exact match scores them)."""
    from qlora_nb.data.load import load_demo
    from qlora_nb.data.validate import validate

    text = validate(load_demo(), None)
    return [text.template.prompt(r) for r in (text.val_rows or [])[:n]]


def greedy(model, session, ids: list[int], max_new_tokens: int) -> tuple[list[int], float]:
    """Greedy new ids and seconds, with the session's own generate keywords (its EOS ids), on ``model``."""
    import torch

    from qlora_nb.config import GenerateConfig
    from qlora_nb.engine.generation.stream import generate_kwargs

    kw = generate_kwargs(session, GenerateConfig(max_new_tokens=max_new_tokens))
    x = torch.tensor([ids])
    started = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), **kw)
    return [int(t) for t in out[0, len(ids):].tolist()], time.perf_counter() - started


def last_logits(model, ids: list[int]):
    import torch

    x = torch.tensor([ids])
    with torch.no_grad():
        return model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0, -1].float()


def first_difference(session, llm, prompt: list[int], mine: list[int], theirs: list[int], bar: float,
                     ) -> dict[str, Any] | None:
    """Where two greedy continuations part: position, both texts, and both models' logits there.

    ``near_tie``: at that position each model's gap between its own top token and the other's is no larger
    than the two models' largest logit difference there, and that difference is within ``bar`` (the export's own
    logit bar): the two agree within rounding and only a near-tie flipped, which is drift, not a wrong file.
    """
    pos = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b), None)
    if pos is None:
        if len(mine) == len(theirs):
            return None
        pos = min(len(mine), len(theirs))
    tok = session.tokenizer
    out: dict[str, Any] = {"position": pos, "session_text": tok.decode(mine[pos:]),
                           "llamacpp_text": tok.decode(theirs[pos:]), "common_text": tok.decode(mine[:pos])}
    if pos < len(mine) and pos < len(theirs):
        ids = prompt + mine[:pos]
        a, b = last_logits(session.model, ids), last_logits(llm, ids)
        s_tok, l_tok = mine[pos], theirs[pos]
        out.update(session_token=tok.decode([s_tok]), llamacpp_token=tok.decode([l_tok]),
                   session_gap=float(a[s_tok] - a[l_tok]), llamacpp_gap=float(b[l_tok] - b[s_tok]),
                   max_abs_logit_diff=float((a - b).abs().max()), bar=bar)
        tolerance = min(out["max_abs_logit_diff"], bar)
        out["near_tie"] = out["max_abs_logit_diff"] <= bar and max(out["session_gap"], out["llamacpp_gap"]) <= tolerance
    else:  # one stopped (EOS) where the other went on
        out["near_tie"] = False
    return out


def metadata_checks(llm, session) -> dict[str, bool]:
    meta = llm.llm.metadata
    tok = session.tokenizer
    return {"template_match": meta.get("tokenizer.chat_template") == tok.chat_template,
            "eos_match": str(meta.get("tokenizer.ggml.eos_token_id")) == str(tok.eos_token_id)}


def check_file(label: str, file: Path, session, prompts: list[str], adapter: str, lora: Path | None,
               max_new_tokens: int, bar: float, reference: dict[str, list[int]]) -> dict[str, Any]:
    """One row: load ``file`` (+ ``lora``) in llama.cpp and compare it with the session (``adapter`` active)."""
    from qlora_nb.engine.generation.llamacpp import LlamaCppModel
    from qlora_nb.engine.model.adapters import with_adapter

    started = time.perf_counter()
    llm = LlamaCppModel(file, lora=lora)
    load_s = time.perf_counter() - started
    row: dict[str, Any] = {"file": label, "path": file.name, "lora": lora.name if lora else None,
                           "against": f"session, {'adapters off' if adapter == 'base' else 'adapter ' + adapter}",
                           "bytes": file.stat().st_size + (lora.stat().st_size if lora else 0),
                           "load_s": round(load_s, 3), "prompts": len(prompts), **metadata_checks(llm, session)}
    ids_equal = greedy_equal = near_ties = 0
    tokens, seconds, diffs, differences = 0, 0.0, [], []
    with with_adapter(session.model, adapter):  # the session's logits below: as the reference was generated
        for i, p in enumerate(prompts):
            ids = session.tokenizer(p)["input_ids"]
            ids_equal += llm.tokenize(p) == ids
            theirs, took = greedy(llm, session, ids, max_new_tokens)
            tokens, seconds = tokens + len(theirs), seconds + took
            mine = reference[p]
            diffs.append(float((last_logits(session.model, ids) - last_logits(llm, ids)).abs().max()))
            if theirs == mine:
                greedy_equal += 1
            else:
                d = first_difference(session, llm, ids, mine, theirs, bar)
                d["prompt"] = i
                near_ties += bool(d.get("near_tie"))
                differences.append(d)
    llm.close()
    row.update(ids_equal=ids_equal, greedy_equal=greedy_equal, near_ties=near_ties,
               first_difference=differences[0] if differences else None, differences=differences,
               max_abs_logit_diff_prompt_end=max(diffs), tokens_per_s=round(tokens / seconds, 1) if seconds else None,
               tokens=tokens)
    row["passed"] = (ids_equal == len(prompts) and row["template_match"] and row["eos_match"]
                     and greedy_equal + near_ties == len(prompts))
    return row


def transformers_column(file: Path, session, prompts: list[str], reference: dict, max_new_tokens: int) -> dict:
    """The default ``gguf`` column on the same file (transformers reads it back in fp32): load time, tokens/s."""
    import gc

    from qlora_nb.engine.export.gguf_check import load_back

    started = time.perf_counter()
    model, _tok = load_back(file.parent, file.name)
    load_s = time.perf_counter() - started
    tokens, seconds, equal = 0, 0.0, 0
    for p in prompts:
        ids, took = greedy(model, session, session.tokenizer(p)["input_ids"], max_new_tokens)
        tokens, seconds, equal = tokens + len(ids), seconds + took, equal + (ids == reference[p])
    nbytes = sum(t.numel() * t.element_size() for t in model.parameters())
    del model
    gc.collect()
    return {"file": file.name, "load_s": round(load_s, 2), "tokens_per_s": round(tokens / seconds, 1),
            "greedy_equal": equal, "prompts": len(prompts), "bytes_in_memory": nbytes}


def session_reference(session, prompts: list[str], adapter: str, max_new_tokens: int) -> tuple[dict, float]:
    """The session's greedy ids per prompt with ``adapter`` active (``base``: adapters off), and its tokens/s."""
    from qlora_nb.engine.model.adapters import with_adapter

    out, tokens, seconds = {}, 0, 0.0
    with with_adapter(session.model, adapter):
        for p in prompts:
            ids, took = greedy(session.model, session, session.tokenizer(p)["input_ids"], max_new_tokens)
            out[p], tokens, seconds = ids, tokens + len(ids), seconds + took
    return out, tokens / seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from importlib.metadata import version

    import qlora_nb
    from qlora_nb.engine.export.gguf_check import relative_bar
    from qlora_nb.engine.generation.llamacpp import import_llama_cpp

    import_llama_cpp()  # one paragraph saying how to get it, before any training
    loadavg = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None
    started = time.perf_counter()
    session = qlora_nb.load(args.model)
    load_s = time.perf_counter() - started
    prompts = held_out_prompts(args.prompts)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        session.train(data="demo", max_steps=args.steps, learning_rate=5e-4, output_dir=str(work / "run"),
                      n_probes=0, seed=42)
        train_s = time.perf_counter() - started
        print(f"trained {args.steps} steps in {train_s:.0f} s", file=sys.stderr)
        adapter = session.active_adapter
        adapted, session_tps = session_reference(session, prompts, adapter, args.max_new_tokens)
        base_ref, base_tps = session_reference(session, prompts, "base", args.max_new_tokens)
        files = {"merged-f16": session.merge(work / "f16", format="gguf", outtype="f16", verbose=False),
                 "merged-q8_0": session.merge(work / "q8", format="gguf", outtype="q8_0", verbose=False),
                 "ollama-q8_0": session.merge(work / "ollama", format="ollama", outtype="q8_0", verbose=False),
                 "base-f16": session.merge(work / "base", format="gguf", outtype="f16", base_only=True,
                                           verbose=False)}
        lora = next(session.save(work / "lora", format="gguf").glob("*.gguf"))
        print(f"exported {len(files)} files and the GGUF LoRA", file=sys.stderr)
        exports = {k: {"verdict": r.verdict(), "seconds": round(r.seconds, 1)} for k, r in files.items()}
        for label, result in files.items():
            against = "base" if label == "base-f16" else adapter
            bar = relative_bar(session, result.outtype) * (result.logit_scale or 1.0)
            rows.append(check_file(label, result.file, session, prompts, against, None, args.max_new_tokens, bar,
                                   base_ref if against == "base" else adapted))
        base = files["base-f16"]
        rows.append(check_file("base-f16+lora", base.file, session, prompts, adapter, lora, args.max_new_tokens,
                               relative_bar(session, "f16") * (base.logit_scale or 1.0), adapted))
        reference = transformers_column(files["merged-q8_0"].file, session, prompts, adapted, args.max_new_tokens)
    fp = fingerprint("cpu")
    report = {
        "what": "GGUF files exported by qlora_nb, loaded and run by llama.cpp (llama-cpp-python); greedy ids "
                "compared with the session's, token for token",
        "date": datetime.date.today().isoformat(), "machine": fp["name"], "cpu": fp["cpu"], "cores": fp["cores"],
        "loadavg_before": loadavg, "loadavg_after": Path("/proc/loadavg").read_text().split()[:3],
        "versions": {**fp["versions"], "llama-cpp-python": version("llama-cpp-python"), "gguf": version("gguf")},
        "llama_cpp_threads": os.cpu_count() // 2 if os.cpu_count() else None,
        "model": args.model, "train_steps": args.steps, "train_seed": 42, "learning_rate": 5e-4,
        "max_new_tokens": args.max_new_tokens, "prompts": prompts,
        "session": {"load_s": round(load_s, 2), "train_s": round(train_s, 1), "compute_dtype":
                    session.config.compute_dtype, "tokens_per_s_adapted": round(session_tps, 1),
                    "tokens_per_s_base": round(base_tps, 1)},
        "exports": exports, "transformers_gguf_column": reference, "rows": rows, "passed": all(r["passed"] for r in rows),
    }
    out = Path(args.out) if args.out else RESULTS / f"llamacpp-check-{fp['name']}-{report['date']}.json"
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(f"{args.model}, {args.steps} steps, {len(prompts)} held-out prompts; {fp['cpu']} x{fp['cores']}, load "
          f"{' '.join(report['loadavg_before'] or [])}; llama-cpp-python {report['versions']['llama-cpp-python']}")
    print(f"  session (NF4, {session.config.compute_dtype}): {session_tps:.1f} tokens/s adapted, "
          f"{base_tps:.1f} base")
    t = reference
    print(f"  transformers gguf column ({t['file']}, fp32, {t['bytes_in_memory'] / 2**20:.0f} MiB): load "
          f"{t['load_s']:.2f} s, {t['tokens_per_s']} tokens/s, greedy {t['greedy_equal']}/{t['prompts']}")
    for r in rows:
        d = r["first_difference"]
        note = "" if d is None else (f"; first difference prompt {d['prompt']} token {d['position']}: session "
                                     f"{d.get('session_token')!r} vs llama.cpp {d.get('llamacpp_token')!r}"
                                     f"{' (near-tie)' if d.get('near_tie') else ''}")
        print(f"  {'ok  ' if r['passed'] else 'FAIL'} {r['file']:<14} ids {r['ids_equal']}/{r['prompts']}, greedy "
              f"{r['greedy_equal']}/{r['prompts']}, template {'✓' if r['template_match'] else '✗'}, EOS "
              f"{'✓' if r['eos_match'] else '✗'}, load {r['load_s']:.2f} s, {r['tokens_per_s']} tokens/s{note}")
    print(f"wrote {out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
