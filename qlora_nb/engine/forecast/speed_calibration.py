"""The machine's rates for the time forecast (:mod:`qlora_nb.memory.speed`), measured once and cached.

Each rate is timed on the primitive it stands for, at the model's own shapes:
``F.linear`` forward and the input-gradient matmul in the compute dtype
and in fp32 (matmul FLOP/s: LLM.int8's CPU training path multiplies in fp32), bitsandbytes' ``dequantize_4bit`` (NF4 + double quant) and
the LLM.int8 CPU path's ``CB.to(dtype) * SCB/127`` (seconds per weight), a
read-modify-write elementwise chain (bytes/s), a tiny op (seconds per
dispatch) and ``torch.optim.AdamW`` over adapter-sized tensors (seconds per
parameter). Each timing is the *best* of several repeats: another process on
the cores can only make a repeat slower, never faster, so the best is the one
noise cannot poison (a median measured while a second torch process shared the
2 cores here was 15-30x too slow, and stayed in the cache for every later
forecast). What a real step loses to its own overheads is in the model's fitted
efficiencies (:mod:`qlora_nb.memory.speed`), not in the rates.

The result is cached in the toolkit's cache (``speed_rates.json``), keyed by
machine (CPU model and cores, or GPU name), torch version, thread count,
compute dtype, token count and shapes, so it is measured once per machine
(~2 s on a 2-core CPU); a damaged or foreign file is measured over and
rewritten. :func:`recalibrate` measures again and keeps, rate by rate, the
better of the old and the new figure (a run far from its forecast calls it,
:mod:`.recalibrate`). A GPU that is not the one this process runs on is priced
from its published peak (:func:`qlora_nb.memory.speed.gpu_rates`), marked
"estimated".
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from ...memory.speed import Rates
from .flops import _machine, own_rng

RATES_FILE = "speed_rates.json"
_RATES: dict[str, Rates] = {}


def rates_file() -> Path:
    from ..model.models import cache_dir

    return cache_dir() / RATES_FILE


def _read() -> dict:
    try:
        data = json.loads(rates_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(key: str, rates: Rates) -> None:
    """Keep a measurement; a cache that cannot be written only means measuring again next time."""
    from ...fileio import write_text_atomic

    data = _read()
    data[key] = rates.to_dict()
    with contextlib.suppress(OSError):
        rates_file().parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(rates_file(), json.dumps(data, indent=1, sort_keys=True))


def cache_key(device: str, dtype: str, shapes: list[tuple[int, int]], tokens: int, threads: int,
              torch_version: str | None = None) -> str:
    if torch_version is None:
        import torch

        torch_version = torch.__version__
    return f"{_machine(device)}|torch={torch_version}|{dtype}|threads={threads}|tokens={tokens}|{sorted(shapes)}"


def _best_time(fn: Callable[[], object], sync: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` timings after one warm-up call (see the module docstring for why the best)."""
    fn()  # kernel selection, packing, allocator warm-up
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return min(times)


def measure_rates(shapes: list[tuple[int, int]], dtype: str = "bfloat16", device: str = "cpu", tokens: int = 512,
                  repeats: int = 7) -> Rates:
    """Time each primitive (see the module docstring) and return the machine's :class:`Rates`.

    Its random tensors come from a forked generator: a measurement taken between a run's ``set_seed`` and
    its first step (or after a run, by the drift check) must leave the run's generators where they were.
    """
    with own_rng(device):
        return _measure_rates(shapes, dtype, device, tokens, repeats)


def _measure_rates(shapes: list[tuple[int, int]], dtype: str, device: str, tokens: int, repeats: int) -> Rates:
    import torch

    dt = getattr(torch, dtype)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    shapes = sorted(set(shapes))[:4] or [(512, 512)]
    flop = seconds = seconds32 = 0.0
    deq4 = deq8 = 0.0
    weights = 0
    for k, n in shapes:
        x = torch.randn(tokens, k, dtype=dt, device=device)
        w = torch.randn(n, k, dtype=dt, device=device)
        g = torch.randn(tokens, n, dtype=dt, device=device)
        seconds += _best_time(lambda x=x, w=w: torch.nn.functional.linear(x, w), sync, repeats)
        seconds += _best_time(lambda g=g, w=w: g @ w, sync, repeats)
        x32, w32, g32 = x.float(), w.float(), g.float()
        seconds32 += _best_time(lambda x=x32, w=w32: torch.nn.functional.linear(x, w), sync, repeats)
        seconds32 += _best_time(lambda g=g32, w=w32: g @ w, sync, repeats)
        flop += 4.0 * tokens * k * n
        deq4 += _dequant4_seconds(w, sync, repeats)
        deq8 += _dequant8_seconds(w, sync, repeats)
        weights += k * n
    # 16 MiB per tensor: larger than the caches, as a step's activations are
    big = torch.randn(4 * 2**20, dtype=torch.float32, device=device)
    scale = torch.rand_like(big)
    # x * s + x: reads two tensors, writes two (the product, then the sum)
    elt = _best_time(lambda: torch.add(big * scale, big), sync, repeats)
    tiny = torch.ones(8, device=device)
    op = _best_time(lambda: [tiny.add(1.0) for _ in range(100)], sync, repeats) / 100
    return Rates(
        matmul_flops_per_s=flop / seconds if seconds > 0 else 1e9,
        matmul_fp32_flops_per_s=flop / seconds32 if seconds32 > 0 else 1e9,
        elementwise_bytes_per_s=4.0 * big.numel() * big.element_size() / max(elt, 1e-9),
        op_seconds=op, adamw_seconds_per_param=_adamw_seconds_per_param(shapes, device, sync, repeats),
        dequant_seconds_per_weight={4: deq4 / weights, 8: deq8 / weights},
        machine=_machine(device), source="measured", load_average=_load_average())


def _load_average() -> float | None:
    """The 1-minute load average while measuring (None where the OS has none), kept with the rates."""
    import os

    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _dequant4_seconds(w, sync, repeats: int) -> float:
    """``dequantize_4bit`` of an NF4 + double-quant weight (0 where bitsandbytes is missing)."""
    try:
        import bitsandbytes.functional as BF
    except ImportError:
        return 0.0
    q, state = BF.quantize_4bit(w, quant_type="nf4", compress_statistics=True)
    return _best_time(lambda: BF.dequantize_4bit(q, state), sync, repeats)


def _dequant8_seconds(w, sync, repeats: int) -> float:
    """LLM.int8's CPU training path: int8 rows times their absmax / 127, in the compute dtype."""
    import torch

    scb = w.float().abs().amax(1)
    cb = torch.round(w.float() / scb[:, None] * 127).to(torch.int8)
    return _best_time(lambda: cb.to(w.dtype).mul_(scb.unsqueeze(1).mul(1.0 / 127.0)), sync, repeats)


def _adamw_seconds_per_param(shapes, device: str, sync, repeats: int) -> float:
    """One ``AdamW.step`` over rank-16 adapter pairs of the model's shapes (what a LoRA step updates)."""
    import torch

    params = []
    for k, n in shapes:
        params += [torch.nn.Parameter(torch.randn(16, k, device=device)),
                   torch.nn.Parameter(torch.randn(n, 16, device=device))]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW(params, lr=1e-4)
    total = sum(p.numel() for p in params)
    return _best_time(opt.step, sync, repeats) / total


def machine_rates(shapes: list[tuple[int, int]], dtype: str = "bfloat16", device: str = "cpu", tokens: int = 512,
                  cache: bool = True) -> Rates:
    """The cached :class:`Rates` for this machine and these shapes, measuring them the first time."""
    import torch

    key = cache_key(device, dtype, shapes, tokens, torch.get_num_threads())
    if key in _RATES:
        return _RATES[key]
    if cache:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            known = Rates.from_dict(_read()[key])
            if min(known.matmul_flops_per_s, known.matmul_fp32_flops_per_s, known.elementwise_bytes_per_s) > 0:
                _RATES[key] = known
                return known
    rates = measure_rates(shapes, dtype, device, tokens)
    _RATES[key] = rates
    if cache:
        _write(key, rates)
    return rates


def better_of(old: Rates, new: Rates) -> Rates:
    """Rate by rate, the faster of two measurements of the same machine (noise only ever slows one down)."""
    deq: dict[int, float] = {}
    for bits in {*old.dequant_seconds_per_weight, *new.dequant_seconds_per_weight}:
        seen = [v for v in (old.dequant_seconds_per_weight.get(bits), new.dequant_seconds_per_weight.get(bits)) if v]
        if seen:
            deq[bits] = min(seen)
    return Rates(matmul_flops_per_s=max(old.matmul_flops_per_s, new.matmul_flops_per_s),
                 elementwise_bytes_per_s=max(old.elementwise_bytes_per_s, new.elementwise_bytes_per_s),
                 op_seconds=min(old.op_seconds, new.op_seconds),
                 adamw_seconds_per_param=min(old.adamw_seconds_per_param, new.adamw_seconds_per_param),
                 dequant_seconds_per_weight=deq,
                 matmul_fp32_flops_per_s=max(old.matmul_fp32_flops_per_s, new.matmul_fp32_flops_per_s),
                 machine=new.machine or old.machine, source="measured", load_average=new.load_average)


def recalibrate(shapes: list[tuple[int, int]], dtype: str = "bfloat16", device: str = "cpu",
                tokens: int = 512) -> tuple[Rates | None, Rates]:
    """Measure again and cache the better of the old and new rates: (the old rates if any, the kept rates)."""
    import torch

    key = cache_key(device, dtype, shapes, tokens, torch.get_num_threads())
    old = _RATES.get(key)
    if old is None:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            old = Rates.from_dict(_read()[key])
    new = measure_rates(shapes, dtype, device, tokens)
    kept = better_of(old, new) if old is not None and old.source == "measured" else new
    _RATES[key] = kept
    _write(key, kept)
    return old, kept


def forget() -> None:
    """Drop this process's copies (the file stays): the next call reads the cache or measures again."""
    _RATES.clear()
