"""Command line used by the Makefile: ``python -m qlora_nb.cli fetch-model|demo``."""

from __future__ import annotations

import argparse
import sys
import time

from .config import MODEL
from .errors import QloraError


def fetch_model(args) -> None:
    from .engine.model.models import resolve_model

    t = time.perf_counter()
    path = resolve_model(args.model)
    print(f"model {args.model!r} ready in {path} ({time.perf_counter() - t:.1f} s)")


def exact_match(session, n: int = 16, base: bool = False, max_new_tokens: int = 40):
    """Greedy outputs on the first ``n`` held-out demo rows, scored exactly as ``eval_metric: exact_match`` scores
    them in training (:func:`qlora_nb.engine.training.task_metric.score_rows`)."""
    from .data.load import load_demo
    from .data.validate import validate
    from .engine.training.task_metric import score_rows

    text = validate(load_demo(), None)
    rows = (text.val_rows or [])[:n]
    return score_rows(session, text.template, rows, "exact_match", base=base, max_new_tokens=max_new_tokens)


def demo(args) -> None:
    """The main job end to end on the offline demo model: load, ledger, train, held-out exact match."""
    import qlora_nb

    t = time.perf_counter()
    session = qlora_nb.load(args.model)
    print(f"loaded {args.model} 4-bit NF4 + double quantization with LoRA in {time.perf_counter() - t:.1f} s\n")
    print(session.ledger())
    print("\ndemo task: extract name, age, city and job from a sentence as strict JSON "
          "(held-out rows use first names never seen in training)")
    t = time.perf_counter()
    before = exact_match(session, n=args.eval_rows, base=True)
    print(f"held-out exact match before training: {before}  ({time.perf_counter() - t:.0f} s)\n")
    try:
        from .views.progress import TextProgress

        view = TextProgress.for_session(session, every=10)
    except ImportError:
        view = None
    # A short run on a 135M model: a higher peak lr than the 7B default (2e-4) so the format lands in 60 steps.
    result = session.train(data="demo", max_steps=args.steps, learning_rate=args.lr, output_dir="runs/demo",
                           overwrite=True, n_probes=0)
    if view is not None:
        view.detach()
    print(f"\ntrained {result.metrics['steps']} steps in {result.metrics['wall_s']:.0f} s, "
          f"{result.metrics['tokens_per_s']:.0f} non-padding tokens/s; adapter saved in {result.adapter_dir}")
    t = time.perf_counter()
    after = exact_match(session, n=args.eval_rows)
    print(f"held-out exact match after training:  {after}  ({time.perf_counter() - t:.0f} s)\n")
    i = next((k for k in range(after.total) if after.scores[k]), 0)
    sentence = after.prompts[i].split("### Input:\n", 1)[-1].split("\n\n### Response:", 1)[0]
    print(f"example (held out): {sentence}")
    print(f"  reference: {after.references[i].strip()}")
    print(f"  base:      {before.outputs[i].strip()!r}")
    print(f"  adapted:   {after.outputs[i].strip()!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qlora_nb")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("fetch-model", help="Download and convert the demo model into the cache.")
    p.add_argument("--model", default=MODEL.default, help=f"The demo model (default {MODEL.default}).")
    p.set_defaults(fn=fetch_model)
    p = sub.add_parser("demo", help="Load, quantize, attach LoRA, train on the demo data, compare.")
    p.add_argument("--model", default=MODEL.default, help=f"The demo model (default {MODEL.default}).")
    p.add_argument("--steps", type=int, default=60, help="Training steps (default 60).")
    p.add_argument("--lr", type=float, default=5e-4, help="Peak learning rate (default 5e-4).")
    p.add_argument("--eval-rows", dest="eval_rows", type=int, default=16, help="Held-out rows scored (default 16).")
    p.set_defaults(fn=demo)
    args = parser.parse_args(argv)
    try:
        args.fn(args)
    except QloraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
