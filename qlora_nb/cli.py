"""Command line used by the Makefile: ``python -m qlora_nb.cli fetch-model|demo``."""

from __future__ import annotations

import argparse
import sys
import time

from .errors import QloraError


def fetch_model(args) -> None:
    from .models import resolve_model

    t = time.perf_counter()
    path = resolve_model(args.model)
    print(f"model {args.model!r} ready in {path} ({time.perf_counter() - t:.1f} s)")


def demo(args) -> None:
    """The main job end to end on the offline demo model."""
    import qlora_nb

    t = time.perf_counter()
    session = qlora_nb.load(args.model)
    print(f"loaded {args.model} 4-bit NF4 + double quantization with LoRA in {time.perf_counter() - t:.1f} s\n")
    print(session.ledger())
    prompt = "What is the capital of France?"
    print(f"\nprompt: {prompt}\nreply:  {session.generate(prompt, adapter='base', max_new_tokens=32)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qlora_nb")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("fetch-model", help="Download and convert the demo model into the cache.")
    p.add_argument("--model", default="smollm2-135m")
    p.set_defaults(fn=fetch_model)
    p = sub.add_parser("demo", help="Load, quantize, attach LoRA, train on the demo data, compare.")
    p.add_argument("--model", default="smollm2-135m")
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
