"""The planner widget: options re-plan in the browser; a stacked bar compares full / LoRA / QLoRA.

The arithmetic runs in JavaScript (``widgets/planner.js``, a port of
:mod:`qlora_nb.memory.planner` tested against it on a grid), so moving a slider
re-plans instantly with no kernel round-trip, and keeps working in a static
notebook with saved widget state. The chosen options sync back to ``options``;
:meth:`PlannerWidget.current_plan` recomputes them in Python.
"""

from __future__ import annotations

import dataclasses

import traitlets

from .base import QloraWidget, asset, esm


def planner_constants() -> dict[str, float]:
    from ..memory import cuda_peak as C
    from ..memory import planner as P

    return {"cpu_runtime_bytes": P.CPU_RUNTIME_BYTES, "cpu_act_scale": P.CPU_ACT_SCALE,
            "cuda_context_bytes": C.CUDA_CONTEXT_BYTES, "tight": P.TIGHT,
            "logit_fp32_copies": P.LOGIT_FP32_COPIES, "offload_host_bytes": P.OFFLOAD_HOST_BYTES,
            "logit_peak": C.PINNED.logit_peak, "logit_held": C.PINNED.logit_held, "reserve": C.RESERVE,
            "allocator_cache_bytes": C.ALLOCATOR_CACHE_BYTES}


PLANNER_CHOICES = ("method", "quant", "optimizer", "strategy")


def plan_choices() -> dict[str, list]:
    """The planner's dropdown values, read from PlanConfig's field declarations (the JS lists none itself)."""
    from ..config import PlanConfig
    from ..options import option_specs

    return {s["name"]: s["choices"] for s in option_specs(PlanConfig, PLANNER_CHOICES)}


def arch_payload(arch) -> dict:
    d = dataclasses.asdict(arch)
    d.pop("aliases", None)
    return d


class PlannerWidget(QloraWidget):
    """Sliders/dropdowns over :class:`qlora_nb.config.PlanConfig` options with the verdict and comparison bar."""

    _esm = esm("planner.js")
    SESSION_FREE = ("current_plan",)  # a plan from a config: no session
    _css = asset("qlora.css")
    archs = traitlets.Dict().tag(sync=True)
    arch = traitlets.Dict().tag(sync=True)  # the planned model's own dimensions (may be off-table)
    options = traitlets.Dict().tag(sync=True)
    choices = traitlets.Dict().tag(sync=True)  # the dropdowns' values, from PlanConfig's declarations
    constants = traitlets.Dict().tag(sync=True)
    limit_bytes = traitlets.Int(0).tag(sync=True)
    measured = traitlets.Dict().tag(sync=True)
    forecast = traitlets.Dict().tag(sync=True)  # time next to memory (memory.forecast.Forecast.as_dict), when priced

    def __init__(self, plan, **kwargs) -> None:
        from ..memory.architectures import ARCHITECTURES

        opts = plan.config.to_dict()
        opts["model"] = plan.arch.name if plan.arch.name in ARCHITECTURES else plan.model
        super().__init__(archs={k: arch_payload(a) for k, a in ARCHITECTURES.items()}, arch=arch_payload(plan.arch),
                         options=opts, choices=plan_choices(), constants=planner_constants(), limit_bytes=int(plan.limit_bytes),
                         measured=dict(plan.measured or {}),
                         forecast=plan.forecast.as_dict() if plan.forecast is not None else {}, **kwargs)
        self._plan = plan

    def current_plan(self):
        """The plan for the options now chosen in the widget, computed in Python."""
        from ..config import PlanConfig
        from ..memory.architectures import ARCHITECTURES
        from ..memory.planner import build_plan

        o = dict(self.options)
        gib = o.pop("gpu_gib", None)
        if gib:
            o["gpu"] = f"{gib}GiB"
        name = o.get("model")
        arch = ARCHITECTURES.get(name, self._plan.arch)
        if name not in ARCHITECTURES:
            o["model"] = self._plan.config.model
        cfg = PlanConfig.from_options(o)
        return build_plan(arch, cfg, "widget", name)

    def text(self) -> str:
        return str(self._plan)
