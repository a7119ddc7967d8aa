"""The planner for a loaded session: the session's settings read out as plain values for the memory planner.

:mod:`qlora_nb.memory.planner` sits below the engine and knows no Session; this
module reads what it needs (LoRA config, quantization, last run's settings,
device, measured ledger) and hands it over as a dict.
"""

from __future__ import annotations

from typing import Any

from ...memory.planner import Plan, cheapest_fix_for, plan_loaded


def session_plan_options(session) -> dict[str, Any]:
    """PlanConfig options that describe a loaded session (its LoRA config and last run, when there is one)."""
    c = session.config
    opts: dict[str, Any] = {
        "model": str(session.model_path), "bits": c.bits, "method": "qlora" if c.bits == 4 else "lora",
        "quant": c.quant, "double_quant": c.double_quant, "r": c.r, "targets": list(c.targets),
        "dropout": c.dropout, "dora": c.dora, "compute_dtype": c.compute_dtype,
        "device": "cuda" if str(session.device).startswith("cuda") else "cpu",
    }
    peft_cfg = getattr(session.model, "peft_config", {}).get(getattr(session.model, "active_adapter", None))
    if peft_cfg is not None:
        opts["r"] = int(peft_cfg.r)
        tm = peft_cfg.target_modules
        opts["targets"] = [tm] if isinstance(tm, str) else sorted(tm)
        opts["dropout"] = float(peft_cfg.lora_dropout)
        opts["dora"] = bool(getattr(peft_cfg, "use_dora", False))
    run_cfg = getattr(session.runs[-1], "config", None) if getattr(session, "runs", None) else None
    if run_cfg is not None:
        for src, dst in (("batch_size", "batch_size"), ("cutoff_len", "seq_len"),
                         ("gradient_checkpointing", "gradient_checkpointing"), ("optimizer", "optimizer")):
            # TrainResult.config is TrainConfig.to_dict(): a dict (an attribute lookup never matched it)
            value = run_cfg.get(src) if isinstance(run_cfg, dict) else getattr(run_cfg, src, None)
            if value is not None:
                opts[dst] = value
    return opts


def plan_session(session, *, measure: bool = True, **options: Any) -> Plan:
    """The plan for a loaded session's model and settings (options override), with its measured ledger."""
    measured = session.ledger().as_dict() if measure else None
    return plan_loaded(session_plan_options(session), label=session.config.model, measured=measured, **options)


def cheapest_fix(session, **options: Any) -> str | None:
    """For OOM messages: the planner's cheapest change for this session and run settings."""
    return cheapest_fix_for(session_plan_options(session), **options)
