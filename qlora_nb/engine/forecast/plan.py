"""Plans with time: the memory plan plus this machine's rates, the data's row lengths, and the fastest setup.

:func:`plan` is ``qlora_nb.plan`` and :func:`plan_session` is ``Session.plan``
(``%qlora_plan``'s twins). The memory side is :mod:`qlora_nb.memory.planner`
unchanged; this module supplies what a pure planner cannot: the measured
rates (:mod:`.speed_calibration`, or a GPU's published peak, "estimated"), and
tokens per row from the data tokenized exactly as training will (same
validation, template, cutoff and completion-only labels). With
``measure=True`` it also times real steps (:mod:`.speed_measure`).
"""

from __future__ import annotations

from typing import Any

from ...config import PlanConfig
from ...errors import QloraError
from ...memory.architectures import Arch
from ...memory.forecast import build_forecast
from ...memory.plan import Plan
from ...memory.speed import Rates, Workload, gpu_rates

DEFAULT_VAL_SPLIT = 0.1  # what training holds out unless told otherwise (TrainConfig.val_split)
TRAIN_SEED = 42  # TrainConfig.seed's default: the held-out split is seeded by it


def rates_for(arch: Arch, cfg: PlanConfig, gpu_name: str | None = None) -> Rates:
    """Measured rates for this machine's CPU or its own GPU; a named GPU's published peak otherwise."""
    import sys

    from ...precision import resolve_compute_dtype

    shapes = sorted({(s.d_in, s.d_out) for s in arch.linears()})
    if cfg.device == "cpu":
        from .speed_calibration import machine_rates

        return machine_rates(shapes, resolve_compute_dtype(cfg.compute_dtype, "cpu"), "cpu")
    torch = sys.modules.get("torch")
    here = None
    if torch is not None and torch.cuda.is_available():
        here = torch.cuda.get_device_name(torch.cuda.current_device())
    if here is not None and (gpu_name is None or gpu_name.lower() in here.lower()):
        from .speed_calibration import machine_rates

        index = torch.cuda.current_device()
        dtype = resolve_compute_dtype(cfg.compute_dtype, "cuda", torch.cuda.get_device_capability(index))
        return machine_rates(shapes, dtype, f"cuda:{index}")
    name = gpu_name or "A100"  # planning for a GPU that is not here, none named: the common cloud one
    rates = gpu_rates(name)
    if rates is None:
        from ...memory.speed import GPU_PEAKS

        raise QloraError(f"no published peak known for GPU {name!r}.", where="plan option 'gpu_model'",
                         hint=f"Use one of {', '.join(GPU_PEAKS)}, or plan on that GPU itself (it is measured).")
    return rates


def grouping_of(group_by_length: bool = True, packing: bool = False) -> str:
    """How training batches its rows (``TrainConfig.group_by_length`` / ``packing``; see memory/batches.py)."""
    return "packing" if packing else "group_by_length" if group_by_length else "random"


def workload_for(cfg: PlanConfig, tokenizer: Any = None, template: str | None = None) -> Workload:
    """Tokens per row from ``cfg.data`` tokenized as training does; every row ``seq_len`` tokens without data.

    With data, each batch is padded to its longest row in the order training's default sampler draws them
    (length-grouped), over the steps the run takes when ``max_steps`` is set.
    """
    if cfg.data is None:
        return Workload.padded(cfg.batch_size, cfg.seq_len)
    from ...data.collate import tokenize_rows
    from ...data.load import load_data
    from ...data.validate import validate

    if tokenizer is None:
        raise QloraError(f"data was given but no tokenizer is at hand to count its tokens: {cfg.model!r} is not on "
                         "this machine (no tokenizer files in its folder or the cache).",
                         where="plan option 'data'",
                         hint="Load the model once (qlora_nb.load(...)) so its tokenizer is cached, plan the loaded "
                              "session (session.plan(data=...) / %qlora_plan --data ...), or leave data out for a "
                              "time per step.")
    text = validate(load_data(cfg.data), template, tokenizer)
    rows = text.rows
    if text.val_rows is None:  # training holds out a share (data/split.py) before batching the rest
        from ...data.split import split_rows

        rows = split_rows(rows, DEFAULT_VAL_SPLIT, TRAIN_SEED)[0]
    tok = tokenize_rows(rows, text.template, tokenizer, cfg.seq_len, True, text.chat_format)
    lengths = [len(ex["input_ids"]) for ex in tok.examples]
    labelled = [sum(1 for t in ex["labels"][1:] if t != -100) for ex in tok.examples]
    return Workload.from_lengths(cfg.batch_size, lengths, labelled, cfg.seq_len, grouping_of(),
                                 cfg.max_steps if cfg.max_steps and cfg.max_steps > 0 else None,
                                 cfg.gradient_accumulation_steps)


def attach_forecast(p: Plan, *, tokenizer: Any = None, template: str | None = None, rates: Rates | None = None,
                    gpu_name: str | None = None) -> Plan:
    """Price ``p``'s configuration (and the alternatives) in seconds; sets ``p.forecast``."""
    rates = rates or rates_for(p.arch, p.config, gpu_name)
    work = workload_for(p.config, tokenizer, template)
    p.forecast = build_forecast(p.arch, p.config, rates, work, p.limit_bytes)
    return p


def plan(model: str | None = None, *, gpu_model: str | None = None, **options: Any) -> Plan:
    """Predict training memory *and time* for ``model``: the ``%qlora_plan MODEL`` twin (``qlora_nb.plan``).

    Options are :class:`qlora_nb.config.PlanConfig` fields; ``gpu_model`` (``"T4"``, ``"A100"``…) prices time
    for a GPU that is not here, from its published peak ("estimated").
    """
    from ...memory.planner import plan as memory_plan

    p = memory_plan(model, **options)
    tokenizer = None
    if p.config.data is not None:  # the rows are counted with the model's own tokenizer, when it is on this machine
        from ..model.tokenizer import cached_tokenizer

        tokenizer = cached_tokenizer(p.config.model)
    return attach_forecast(p, tokenizer=tokenizer, gpu_name=gpu_model)


def plan_session(session, *, measure: bool = False, ledger: bool = True, steps: int = 3,
                 gpu_model: str | None = None, loader: Any = None, **options: Any) -> Plan:
    """The plan for a loaded session (its settings, options override) with its ledger and time forecast.

    ``measure=True`` also runs ``steps`` real training steps of each setup that fits (``%qlora_plan
    --measure``) on throwaway copies made by ``loader`` (``Session.plan`` passes ``load``), and leaves the
    session exactly as it was.
    """
    from .planning import plan_session as memory_plan_session

    p = memory_plan_session(session, measure=ledger, **options)
    template = None
    runs = getattr(session, "runs", None)
    if runs and isinstance(getattr(runs[-1], "config", None), dict):
        template = runs[-1].config.get("template")
    attach_forecast(p, tokenizer=session.tokenizer, template=template, gpu_name=gpu_model)
    if measure:
        from .speed_measure import measure_setups

        measure_setups(session, p, steps=steps, template=template, loader=loader)
    return p


def run_prediction(session, cfg: Any, examples: list[dict[str, list[int]]], steps: int | None = None) -> float | None:
    """Predicted seconds per optimizer step of a run about to start (its own tokenized rows, padded per batch as
    its sampler groups them, over its ``steps``); None if unpriceable.

    The dashboard shows it beside the measured step time, and the ETA at step 1 uses it (step 1 pays for
    warm-up, so elapsed time alone overstates the run).
    """
    from ...memory.forecast import price
    from .planning import plan_session as memory_plan_session

    try:
        p = memory_plan_session(session, measure=False, batch_size=cfg.batch_size, seq_len=cfg.cutoff_len,
                                gradient_checkpointing=cfg.gradient_checkpointing, optimizer=cfg.optimizer,
                                gradient_accumulation_steps=cfg.gradient_accumulation_steps)
        lengths = [len(ex["input_ids"]) for ex in examples]
        labelled = [sum(1 for t in ex["labels"][1:] if t != -100) for ex in examples]
        work = Workload.from_lengths(cfg.batch_size, lengths, labelled, cfg.cutoff_len,
                                     grouping_of(cfg.group_by_length, cfg.packing), steps, cfg.gradient_accumulation_steps)
        return price(p.arch, p.config, rates_for(p.arch, p.config), work)[0].step_seconds
    except Exception:  # advice only: a forecast that cannot be made must never stop a run
        return None


def studio_forecast(session, opts: dict[str, Any], preview: Any, cutoff: int) -> dict[str, Any]:
    """The studio's forecast for its options (``TrainConfig`` fields) and previewed rows: memory and time.

    Memory is planned for the longest previewed row (capped at ``cutoff``); time from the rows' own lengths
    (the plan assumed full rows). ``fastest`` says whether the studio can apply it: only batch,
    accumulation and checkpointing change in a loaded session.
    """
    from ...config import TrainConfig
    from ...memory.speed import Workload

    def get(name: str) -> Any:
        return opts.get(name, getattr(TrainConfig, name))

    lengths = preview.lengths if preview is not None else []
    seq = min(cutoff, max(lengths)) if lengths else cutoff
    p = plan_session(session, ledger=False, seq_len=seq, batch_size=get("batch_size"), optimizer=get("optimizer"),
                     gradient_checkpointing=get("gradient_checkpointing"))
    out = {**p.to_event(), "seq_len": seq, "batch_size": p.config.batch_size, "limit_source": p.limit_source,
           "time": None}
    if p.forecast is None:
        return out
    c = p.config.replace(max_steps=get("max_steps"), epochs=get("epochs"),
                         gradient_accumulation_steps=get("gradient_accumulation_steps"))
    work = p.forecast.workload
    if lengths:
        rows = len(preview.rows)
        work = Workload.from_lengths(c.batch_size, lengths, [], cutoff,
                                     grouping_of(get("group_by_length"), get("packing")),
                                     c.max_steps if c.max_steps and c.max_steps > 0 else None,
                                     c.gradient_accumulation_steps)
        split = get("val_split")  # a fraction, or a count when >= 1 (TrainConfig.val_split)
        work.rows = rows if preview.val_rows else max(1, rows - (int(split) if split >= 1 else round(rows * split)))
    f = build_forecast(p.arch, c, rates_for(p.arch, c), work, p.limit_bytes)
    fastest = dict(f.fastest) if f.fastest else None
    if fastest:
        fastest["applicable"] = fastest["bits"] == p.config.base_bits and fastest["method"] != "full"
    out["time"] = {**f.as_dict(), "fastest": fastest}
    return out
