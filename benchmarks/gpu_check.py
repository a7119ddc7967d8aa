"""One-shot GPU check (``make gpu-check``): the CUDA path end to end on random Llama models at real shapes.

For each model (about 1B and 8B parameters; nothing is downloaded: the weights are random, written by this
script from a ``LlamaConfig``) it

1. loads the folder through ``qlora_nb.load`` in NF4 + double quantization (``compute_dtype: auto``) and
   checks the resolved dtype against the GPU's capability;
2. checks the ledger's quantized weights and constants against the bytes of the tensors themselves (walked
   from the bitsandbytes modules, deduplicated by storage) and against the planner's prediction;
3. trains 20 steps with ``paged_adamw_8bit`` and compares the planner's predicted allocator peak (its total
   less the CUDA-context estimate and the paged optimizer state, which live outside torch's allocator) with
   ``torch.cuda.max_memory_allocated`` (target: within +-10%);
4. on the smaller model only: compare, save, reload (adapter weights equal) and merge (verified);
   then FSDP-QLoRA through ``session.launch`` (two ranks on two GPUs, else one rank with FSDP wrapping),
   each rank's peak next to the planner's per-device forecast;
5. times non-padding tokens/s against the plain transformers+peft+bitsandbytes recipe
   (``plain_recipe.py``), same data, steps and batch, in the same process after unloading the session.

Results go to ``results/gpu-<machine>-<date>.json`` (``<machine>``: ``machine.fingerprint``'s name) and the
GPU-check section of ``RESULTS.md`` (rendered by ``render.py``). ``--device cpu --tiny`` (alias ``--dry-run``) runs the same code on a tiny model in a few
seconds; ``tests/test_gpu_check.py`` runs it so this script cannot rot unseen. The models are built on the
target device from the meta device, so host RAM never holds more than one shard being written.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import TokenMeter  # noqa: E402
from machine import fingerprint  # noqa: E402

sys.path.insert(0, str(HERE.parent / "tests"))
from byte_tokenizer import build_byte_tokenizer  # noqa: E402  (the tests' offline tokenizer)

# Real shapes: Llama-3.2-1B and Llama-3-8B (vocabulary 128,256, GQA 8 KV heads).
SHAPES: dict[str, dict[str, Any]] = {
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True),
}
PEAK_TOLERANCE = 0.10
WORDS = ("the model learns a small adapter while the base stays frozen in four bits and the optimizer pages "
         "its state when memory runs short so the notebook keeps going").split()


def build_model_dir(shape: dict[str, Any], path: Path, device: str, seed: int = 0) -> dict[str, Any]:
    """A random bf16 Llama written as safetensors shards; built on ``device`` from the meta device."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    t0 = time.perf_counter()
    tok = build_byte_tokenizer()
    cfg = LlamaConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      max_position_embeddings=4096, **shape)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
    model.tie_weights()
    model.save_pretrained(str(path), max_shard_size="2GB")
    tok.save_pretrained(str(path))
    params = sum(p.numel() for p in model.parameters())
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {"params": params, "build_seconds": time.perf_counter() - t0}


def make_rows(n: int, cutoff: int, seed: int = 0) -> list[dict[str, str]]:
    """Alpaca rows whose output runs past ``cutoff``: every training row is exactly cutoff tokens."""
    rng = random.Random(seed)

    def text(chars: int) -> str:
        out: list[str] = []
        while sum(len(w) + 1 for w in out) < chars:
            out.append(rng.choice(WORDS))
        return " ".join(out)

    return [{"instruction": text(cutoff // 4), "output": text(cutoff)} for _ in range(n)]


def tensor_bytes(model) -> dict[str, int]:
    """Bytes of the 4-bit weights and their quantization constants, from the bitsandbytes modules themselves."""
    import bitsandbytes as bnb

    seen: set[tuple[int, int]] = set()
    out = {"quantized_weights": 0, "quant_constants": 0}

    def add(key: str, t) -> None:
        if t is None:
            return
        ident = (t.untyped_storage().data_ptr(), t.storage_offset())
        if ident not in seen:
            seen.add(ident)
            out[key] += t.numel() * t.element_size()

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            add("quantized_weights", module.weight)
            qs = module.weight.quant_state
            add("quant_constants", qs.absmax)
            add("quant_constants", qs.code)
            if qs.nested:
                add("quant_constants", qs.offset)
                add("quant_constants", qs.state2.absmax)
                add("quant_constants", qs.state2.code)
    return out


class Checks:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, model: str, name: str, ok: bool, detail: str) -> None:
        self.items.append({"model": model, "check": name, "ok": bool(ok), "detail": detail})
        print(f"  [{'ok' if ok else 'FAIL'}] {model}: {name}: {detail}", flush=True)


def check_model(label: str, shape: dict[str, Any], args, work: Path, checks: Checks, full_ops: bool) -> dict:
    import torch

    import qlora_nb
    from qlora_nb.precision import resolve_compute_dtype

    on_cuda = args.device.startswith("cuda")
    folder = work / label
    res: dict[str, Any] = {"shape": shape}
    print(f"{label}: building random weights", flush=True)
    res["build"] = build_model_dir(shape, folder, args.device)
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    session = qlora_nb.load(str(folder), bits=4, quant="nf4", double_quant=True, r=16, alpha=32, dropout=0.05,
                            device="cuda" if on_cuda else "cpu")
    res["load_seconds"] = time.perf_counter() - t0
    capability = tuple(torch.cuda.get_device_capability()) if on_cuda else None
    want = resolve_compute_dtype("auto", args.device, capability)
    res["compute_dtype"] = session.config.compute_dtype
    checks.add(label, "compute_dtype auto", session.config.compute_dtype == want,
               f"{session.config.compute_dtype} (capability {capability}, expected {want})")

    led = session.ledger(measure=False).as_dict()
    real = tensor_bytes(session.model)
    plan = session.plan(measure=False)
    for key in ("quantized_weights", "quant_constants"):
        checks.add(label, f"ledger {key} = tensor bytes", led[key] == real[key], f"ledger {led[key]:,} B, tensors "
                   f"{real[key]:,} B, planner {plan.components[key]:,} B")
        checks.add(label, f"planner {key} = ledger", plan.components[key] == led[key],
                   f"{plan.components[key] - led[key]:+,} B")
    if on_cuda:
        weights = sum(v for k, v in led.items() if k not in ("activations_and_other", "gradients", "optimizer_states"))
        res["allocated_after_load"] = torch.cuda.memory_allocated() - before
        res["ledger_weights_and_adapters"] = weights
    res["ledger_after_load"] = led

    rows = make_rows(args.batch_size * args.steps, args.cutoff_len)
    meter = TokenMeter(session.model)
    options = dict(max_steps=args.steps, batch_size=args.batch_size, cutoff_len=args.cutoff_len,
                   optimizer="paged_adamw_8bit", val_split=0, n_probes=0, warmup_steps=2, logging_steps=1,
                   output_dir=str(work / f"{label}-run"), overwrite=True)
    result = session.train(rows, on_event=lambda e: meter.step_end() if e.get("kind") == "step" else None, **options)
    meter.close()
    res["toolkit"] = {"throughput": meter.summary(), "final_loss": result.losses[-1] if result.losses else None}
    after = session.ledger()
    plan = session.plan(measure=False)
    res["plan_after_train"] = {**plan.components, "paged_bytes": plan.paged_bytes}
    res["ledger_after_train"] = {**after.as_dict(), "measured_bytes": after.measured_bytes,
                                 "measured_source": after.measured_source, "optimizer_paged": after.optimizer_paged}
    checks.add(label, "planner adapters = ledger", plan.components["adapters"] == after.components["adapters"],
               f"{plan.components['adapters']:,} vs {after.components['adapters']:,} B")
    if on_cuda:
        peak = int(torch.cuda.max_memory_allocated())  # reset when the run started (engine/training/train.py)
        predicted = plan.total - plan.components["overhead"] - plan.paged_bytes
        ratio = predicted / peak
        res["peak"] = {"cuda_max_memory_allocated": peak, "cuda_max_memory_reserved":
                       int(torch.cuda.max_memory_reserved()), "planner_allocator_peak": predicted, "ratio": ratio}
        checks.add(label, "planner peak vs max_memory_allocated (+-10%)", abs(ratio - 1) <= PEAK_TOLERANCE,
                   f"predicted {predicted / 2**30:.2f} GiB, measured {peak / 2**30:.2f} GiB, ratio {ratio:.3f}")
        from qlora_nb.memory.cuda_peak import CHECK_ERROR_PCT, reserved_bytes

        reserved = int(torch.cuda.max_memory_reserved())  # what runs out; the plan's total less the context
        r_ratio = (reserved_bytes(plan.components) - plan.paged_bytes) / reserved
        res["peak"]["planner_reserved"], res["peak"]["reserved_ratio"] = reserved_bytes(plan.components), r_ratio
        checks.add(label, f"planner reserved vs max_memory_reserved (+-{CHECK_ERROR_PCT}%, the published check)",
                   abs(r_ratio - 1) <= CHECK_ERROR_PCT / 100, f"ratio {r_ratio:.3f}")
        checks.add(label, "optimizer state paged", after.optimizer_paged, f"optimizer {after.optimizer_name}")

    if full_ops:
        res["ops"] = run_ops(label, session, work, checks)
    session.unload()
    res["plain"] = plain(folder, rows, args, work / f"{label}-plain", session.config.compute_dtype)
    tk = res["toolkit"]["throughput"].get("steady_tokens_per_s")
    pl = res["plain"]["throughput"].get("steady_tokens_per_s")
    res["ratio_toolkit_vs_plain"] = tk / pl if tk and pl else None
    print(f"  {label}: tokens/s toolkit {tk}, plain {pl}", flush=True)
    return res


def run_ops(label: str, session, work: Path, checks: Checks) -> dict[str, Any]:
    """Compare, save, reload (weights equal) and merge (the engine's own verification) on one session."""
    import torch
    from peft import get_peft_model_state_dict

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    cmp = session.compare(["Explain the adapter in one sentence."], max_new_tokens=8)
    out["compare_seconds"] = time.perf_counter() - t0
    checks.add(label, "compare", len(cmp) == 1 and "base" in cmp[0] and "adapted" in cmp[0],
               f"base vs adapted, diverge_at {cmp[0].get('diverge_at')}")
    saved = session.save(work / f"{label}-adapter", overwrite=True)
    name = session.load_adapter(saved, name="reloaded")
    a = get_peft_model_state_dict(session.model, adapter_name=session.active_adapter)
    b = get_peft_model_state_dict(session.model, adapter_name=name)
    same = a.keys() == b.keys() and all(torch.equal(a[k].float(), b[k].float()) for k in a)
    checks.add(label, "save + reload: adapter weights equal", same, f"{len(a)} tensors from {saved}")
    t0 = time.perf_counter()
    merged = session.merge(work / f"{label}-merged", overwrite=True, verbose=False)
    out["merge_seconds"] = time.perf_counter() - t0
    checks.add(label, "merge (verified)", merged is not None, str(merged).splitlines()[0] if merged else "")
    return out


def fsdp_case(args, work: Path, checks: Checks) -> dict[str, Any]:
    """FSDP-QLoRA through ``session.launch`` (``%qlora_launch --fsdp``) on the smallest model.

    Two ranks when the machine has two GPUs, else one rank with FSDP wrapping (two processes on one GPU shard
    nothing meaningful). On the CPU rehearsal the base is 16-bit: bitsandbytes' CPU 4-bit path does not shard
    (a DTensor error), which is why FSDP-QLoRA is a GPU case. Each rank's allocator peak is compared with the
    planner's per-device forecast for the same setup (recorded; no bar yet: this is the first real figure).
    """
    import torch

    import qlora_nb

    on_cuda = args.device.startswith("cuda")
    ranks = 2 if on_cuda and torch.cuda.device_count() >= 2 else 1
    label = f"fsdp-{ranks}-rank{'s' if ranks > 1 else ''}"
    name = "tiny" if args.tiny else "llama-1b"
    folder = work / f"{label}-model"
    build_model_dir(SHAPES[name], folder, args.device)
    bits = 4 if on_cuda else 16
    session = qlora_nb.load(str(folder), bits=bits, r=16, alpha=32, dropout=0.0, device="cuda" if on_cuda else "cpu")
    rows = make_rows(args.batch_size * args.steps * ranks, args.cutoff_len)
    data = work / f"{label}-rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res: dict[str, Any] = {"model": name, "ranks": ranks, "bits": bits}
    t0 = time.perf_counter()
    result = session.launch(ranks, fsdp=True, data=str(data), max_steps=args.steps, batch_size=args.batch_size,
                            cutoff_len=args.cutoff_len, val_split=0, n_probes=0, warmup_steps=2, logging_steps=1,
                            directory=work / f"{label}-job",
                            overwrite=True)
    res["seconds"] = time.perf_counter() - t0
    res["summary"] = {k: v for k, v in result.summary.items() if isinstance(v, (int, float, str, bool, type(None)))}
    res["losses"] = result.losses
    res["rank_memory"] = {str(k): v for k, v in result.rank_memory.items()}
    finite = bool(result.losses) and all(x == x and abs(x) != float("inf") for x in result.losses)
    checks.add(label, "FSDP ran to the end", len(result.losses) == args.steps and finite and not result.interrupted,
               f"{len(result.losses)} steps, losses {result.losses[:1]} ... {result.losses[-1:]}")
    # the ranks' own report: FSDP1 through accelerate on GPUs, transformers' FSDP2 at load on the CPU ("sharded")
    checks.add(label, "FSDP in the ranks", result.summary.get("strategy") == "fsdp"
               and result.summary.get("world_size") == ranks,
               f"world size {result.summary.get('world_size')}, strategy {result.summary.get('strategy')}, "
               f"sharded at load {result.summary.get('sharded')}")
    checks.add(label, "adapter back in the session", result.adapter in session.model.peft_config,
               f"adapter {result.adapter!r}")
    plan = session.plan(measure=False, gpus=ranks, strategy="fsdp", batch_size=args.batch_size,
                        seq_len=args.cutoff_len)
    peaks = [m.get("gpu_peak") for m in result.rank_memory.values() if m.get("gpu_peak")]
    res["planner_per_device_peak"] = plan.per_device_peak
    if peaks:
        res["ratio_planner_vs_measured"] = plan.per_device_peak / max(peaks)
        print(f"  {label}: per-device peak measured {max(peaks) / 2**30:.2f} GiB, planner "
              f"{plan.per_device_peak / 2**30:.2f} GiB", flush=True)
    session.unload()
    return res


def plain(folder: Path, rows, args, work: Path, dtype: str) -> dict[str, Any]:
    """The plain recipe (plain_recipe.py) on the same folder, rows, steps and batch, in this process."""
    import plain_recipe
    import torch

    work.mkdir(parents=True, exist_ok=True)
    data = work / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    spec = {"model_path": str(folder), "data": str(data), "cutoff_len": args.cutoff_len, "work_dir": str(work),
            "batch_size": args.batch_size, "steps": args.steps, "device": args.device, "bits": 4,
            "compute_dtype": dtype}
    out = plain_recipe.run(spec)
    import gc

    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def environment(device: str) -> dict[str, Any]:
    """The machine and versions (:func:`machine.fingerprint`, the same as ``run.py`` records), flat for the report."""
    fp = fingerprint(device)
    return {**fp["versions"], **{k: v for k, v in fp.items() if k != "versions"}, "machine": fp["name"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny)")
    ap.add_argument("--tiny", action="store_true", help="a tiny model instead of the 1B and 8B shapes")
    ap.add_argument("--dry-run", action="store_true", help="same as --device cpu --tiny")
    ap.add_argument("--models", default="llama-1b,llama-8b", help="comma-separated: llama-1b, llama-8b")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--cutoff-len", type=int, default=512)
    ap.add_argument("--out", default=None, help="results folder (default: benchmarks/results; tiny: a temp dir)")
    ap.add_argument("--results-md", default=None, help="report path (default: <out>/../RESULTS.md for GPU runs)")
    ap.add_argument("--work-dir", default=None, help="where the random models are written (deleted afterwards)")
    args = ap.parse_args(argv)
    if args.dry_run:
        args.device, args.tiny = "cpu", True
    if args.tiny:
        args.models, args.steps, args.batch_size, args.cutoff_len = "tiny", min(args.steps, 3), 2, 64
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible (use --dry-run for the CPU rehearsal)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="qlora-gpu-check-"))
    checks = Checks()
    results: dict[str, Any] = {"schema": "gpu-check-1", "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                               "tiny": args.tiny, "env": environment(args.device), "models": {},
                               "settings": {"steps": args.steps, "batch_size": args.batch_size,
                                            "cutoff_len": args.cutoff_len, "optimizer": "paged_adamw_8bit"}}
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    smallest = min(names, key=lambda n: SHAPES[n]["hidden_size"])
    try:
        for name in names:
            try:
                results["models"][name] = check_model(name, SHAPES[name], args, work, checks, name == smallest)
            except Exception as exc:  # record and go on to the next model: one run should say everything
                checks.add(name, "ran to the end", False, f"{type(exc).__name__}: {str(exc)[:400]}")
        try:
            results["fsdp"] = fsdp_case(args, work, checks)
        except Exception as exc:
            checks.add("fsdp", "ran to the end", False, f"{type(exc).__name__}: {str(exc)[:400]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["checks"] = checks.items
    results["wall_seconds"] = time.perf_counter() - started
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="gpu-check-")) if args.tiny
                                           else HERE / "results")
    out.mkdir(parents=True, exist_ok=True)
    kind = "cpu-tiny" if args.tiny else "gpu"
    path = out / f"{kind}-{results['env']['machine']}-{results['date'][:10]}.json"
    path.write_text(json.dumps(results, indent=1, default=str))
    md = Path(args.results_md) if args.results_md else (out / "RESULTS.md" if args.tiny else HERE / "RESULTS.md")
    write_report(md, out, results if args.tiny else None)
    failed = [c for c in checks.items if not c["ok"]]
    print(f"wrote {path} and {md}; {len(checks.items) - len(failed)}/{len(checks.items)} checks passed in "
          f"{results['wall_seconds']:.0f} s")
    return 1 if failed else 0


def write_report(md: Path, out: Path, only: dict[str, Any] | None) -> None:
    """RESULTS.md with the GPU-check section: the full-run report plus the newest gpu-*.json (or ``only``)."""
    from render import load_gpu_checks, render_results
    from summary import load_results

    checks = [only] if only is not None else load_gpu_checks(out)
    md.write_text(render_results(load_results(out) if only is None else [], gpu_checks=checks))


if __name__ == "__main__":
    sys.exit(main())
