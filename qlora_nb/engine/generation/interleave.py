"""Several columns (the base and adapters) generated together, one token each in turn, from the one model in memory.

The playground review found columns streamed one after the other: the adapter column showed "0 tokens" until the
base had finished. Here every column advances in lockstep, so they fill side by side.

How: each step is one call of transformers' ``generate`` with ``max_new_tokens=1`` that is handed the column's
KV cache back (``cache``; ``past_key_values`` before transformers 5.x), so only the new token is computed; between calls the adapter is switched
(:class:`Switch`) and the column's random-number state restored. Each column thus computes exactly what a plain
``generate`` with that adapter computes: same kernels, same shapes, same seed, same logits processors
(``tests/test_chat.py`` checks the tokens are equal, greedy and sampled). ``benchmarks/chat_overhead.py``: a
two-column chat of 32 tokens each on the demo model took 1.145x the two plain generates one after the other (AMD
EPYC, 2 cores; ``benchmarks/results/chat_overhead.json``), the per-call set-up and the chat's own decoding
included; the stepping alone measured 2.17-2.34 s against 2.05-2.18 s for one plain 32-token ``generate``.

Two alternatives were measured or weighed and not taken:

- one ``generate`` per column in its own thread, handing a baton from the streamer: each thread gets its own
  OpenMP team, whose spinning threads take the cores while the other column computes; two columns took 7.9-8.2 s
  against 4.7 s for the two plain generates one after the other (the same with ``OMP_WAIT_POLICY=PASSIVE``
  removed the gap, which names the cause);
- peft's mixed adapter batches (``adapter_names=[...]``, one forward for all columns): rows of different lengths
  are padded, the matrix shapes change, and bitsandbytes on CPU uses a different 4-bit kernel for one row than for
  several, so a column's greedy reply could differ from the plain one; the equality is what a comparison rests on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..model.adapters import BASE, ModelState


class Switch:
    """Makes a column the model's behaviour, changing only what differs from the column before.

    peft's ``disable_adapter_layers`` / ``set_adapter`` walk every module (about 10 ms each on the demo model),
    which per token would cost more than the token; here the LoRA layers are listed once, the on/off flag is
    flipped on those layers only, and ``set_adapter`` runs only when the adapter changes. The ``requires_grad``
    flags that peft flips too are put back after every switch.
    """

    def __init__(self, model) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        self.model = model
        self.layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
        self.enabled: bool | None = None
        self.active = getattr(model, "active_adapter", None)
        # peft flips requires_grad when it switches; put the flags back at once, so a ledger read between tokens
        # (the live memory view) counts the same trainable parameters as before generation
        self.flags = [(p, p.requires_grad) for layer in self.layers for p in layer.parameters()]

    def __call__(self, column: str) -> None:
        if not self.layers:  # a plain (merged or unwrapped) model: only the base exists
            return
        enable, changed = column != BASE, False
        if enable and column != self.active:
            self.model.set_adapter(column)
            self.active, changed = column, True
        if enable != self.enabled:
            for layer in self.layers:
                layer.enable_adapters(enable)
            self.enabled, changed = enable, True
        if changed:
            for p, grad in self.flags:
                if p.requires_grad != grad:
                    p.requires_grad_(grad)


def _rng_get(device: str) -> Any:
    import torch

    cuda = torch.cuda.get_rng_state() if str(device).startswith("cuda") else None
    return torch.get_rng_state(), cuda


def _rng_set(saved: Any) -> None:
    import torch

    cpu, cuda = saved
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda)


def _cache_keyword() -> str:
    """``cache`` since transformers 5.x renamed it (``past_key_values`` warns there), else ``past_key_values``."""
    from transformers.generation import utils

    return "cache" if "cache" in getattr(utils, "ALL_CACHE_NAMES", ()) else "past_key_values"


def generate_together(session, prompts: dict[str, list[int]], kwargs: dict[str, Any], seed: int, state: ModelState,
                      on_token: Callable[[str, list[int]], None],
                      should_stop: Callable[[], bool] | None = None) -> dict[str, tuple[list[int], float]]:
    """Generate every column's reply in lockstep; ``{column: (new token ids, seconds spent on it)}``.

    ``prompts``: column -> prompt token ids (columns in display order). ``kwargs``: the ``generate`` keywords of
    :func:`qlora_nb.engine.generation.stream.generate_kwargs` (its ``max_new_tokens`` is the reply length); ``seed`` is set
    before each column's first token, as a plain generation sets it. ``on_token(column, ids_so_far)`` follows each
    token. Call it inside :func:`~qlora_nb.engine.model.adapters.evaluating` (``state``). ``should_stop()`` true ends every
    column where it is (the replies so far are returned).
    """
    import torch

    kw = dict(kwargs)
    limit = int(kw.pop("max_new_tokens"))
    eos = kw.get("eos_token_id")
    eos = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    from .attached import model_for

    switch = Switch(session.model)
    cache_kw = _cache_keyword()
    out: dict[str, list[int]] = {c: [] for c in prompts}
    seconds = dict.fromkeys(prompts, 0.0)
    cache: dict[str, Any] = dict.fromkeys(prompts)
    rng: dict[str, Any] = {}
    live = [c for c in prompts if limit > 0]
    try:
        while live:
            for column in list(live):
                started = time.perf_counter()
                model = model_for(session, column)  # an attached GGUF (:mod:`.attached`) needs no switch
                if model is session.model:
                    switch(column)
                if column in rng:
                    _rng_set(rng[column])
                else:
                    torch.manual_seed(seed)
                x = torch.tensor([prompts[column] + out[column]], device=session.device)
                with torch.no_grad():
                    step = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=1,
                                          return_dict_in_generate=True, **{cache_kw: cache[column]}, **kw)
                rng[column], cache[column] = _rng_get(session.device), getattr(step, cache_kw)
                token = int(step.sequences[0, -1])
                out[column].append(token)
                seconds[column] += time.perf_counter() - started
                on_token(column, list(out[column]))
                if token in eos or len(out[column]) >= limit:
                    live.remove(column)
                    cache[column] = None
                if should_stop is not None and should_stop():
                    live = []
                    break
    finally:
        if switch.layers and switch.enabled is False:  # the base column disabled them; state restores the rest
            for layer in switch.layers:
                layer.enable_adapters(True)
        state.reapply_grad()
    return {c: (out[c], seconds[c]) for c in prompts}
