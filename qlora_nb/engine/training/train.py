"""Train the session's active adapter with transformers' ``Trainer``; events feed the dashboard.

Setup → fit, the litgpt way: read and validate the data (every row, before any
step), tokenize with completion-only labels, build a ``Trainer`` that pads each
batch to its own longest row and groups rows of similar length (or packs them),
then fit with a callback (:mod:`.train_events`) that turns the Trainer's hooks
into plain events on ``session.events``; :mod:`.run_output` decides where the
run writes. The engine never imports a view.

Interrupts: during ``train()`` a temporary SIGINT handler only sets a flag, so
a kernel interrupt (or ``session.request_stop()``, the dashboard's Stop button)
ends training at the next step boundary with a full checkpoint (adapter,
optimizer, scheduler, RNG), which ``resume=True`` continues with the same
schedule. A second interrupt still leaves a checkpoint (see
:mod:`qlora_nb.engine.interrupts`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ...config import TrainConfig
from ...errors import QloraError
from .run_output import find_checkpoint, output_dir, save_run, save_state
from .setup import Prepared, checked_data, checked_options
from .train_events import PeakRssSampler, make_callback
from .train_result import TrainResult

OPTIM_NAMES = {  # TrainingArguments names; bitsandbytes falls back to unpaged state on CPU by itself
    "adamw": "adamw_torch",
    "adamw_8bit": "adamw_bnb_8bit",
    "paged_adamw_8bit": "paged_adamw_8bit",
    "paged_adamw_32bit": "paged_adamw_32bit",
}


def _trainer_class():
    from transformers import Trainer

    from ...data.collate import real_tokens
    from .loss import labelled_loss, supports_labelled_loss
    from .sampler import seeded_length_grouped

    class CountingTrainer(Trainer):
        """A Trainer that counts the non-padding tokens it trains on (for tokens/s), and projects only
        labelled positions onto the vocabulary in training steps (:mod:`qlora_nb.engine.training.loss`)."""

        tokens = 0
        flops = 0.0  # model FLOPs of the training steps so far (engine/forecast/flops.py), for the MFU
        flops_model = None
        labelled_loss_ok: bool | None = None
        task_metric = None  # engine/task_metric.TrainingMetric when eval_metric is set

        def _get_train_sampler(self, train_dataset=None):
            return seeded_length_grouped(super()._get_train_sampler(train_dataset),
                                         self.args.data_seed if self.args.data_seed is not None else self.args.seed)

        def log(self, logs, *args, **kwargs):
            # The eval's own log entry gets the task metric, so log_history and every report_to logger hold it.
            if self.task_metric is not None and "eval_loss" in logs:
                self.task_metric.on_eval(logs)
            return super().log(logs, *args, **kwargs)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not model.training:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            self.tokens += real_tokens(inputs)
            if self.flops_model is not None:
                self.flops += self.flops_model.batch(inputs)
            if self.labelled_loss_ok is None:  # one process, no label smoothing or custom loss, a plain-head LM
                self.labelled_loss_ok = (self.args.world_size == 1 and self.label_smoother is None
                                         and self.compute_loss_func is None and supports_labelled_loss(model))
            if return_outputs or "labels" not in inputs or not self.labelled_loss_ok:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # normalised over the accumulated batch when the Trainer counted it, else a per-micro-batch mean
            self.loss_is_scaled_for_ga = num_items_in_batch is not None
            with self.accelerator.autocast():  # what accelerate wraps model.forward in under bf16/fp16
                return labelled_loss(model, inputs, num_items_in_batch)

    return CountingTrainer


def _forecast_check(session, history: list[dict[str, Any]], predicted: float | None) -> dict[str, Any] | None:
    """engine/forecast/recalibrate.check_run; advice only, so a failure there never fails the run."""
    from ..forecast.recalibrate import check_run

    try:
        return check_run(session, history, predicted)
    except Exception:
        return None


def _report_to(cfg: TrainConfig) -> list[str]:
    if cfg.report_to == "none":
        return []
    import importlib.util

    module = {"wandb": "wandb", "tensorboard": "tensorboard", "trackio": "trackio"}[cfg.report_to]
    if importlib.util.find_spec(module) is None:
        raise QloraError(f"report_to {cfg.report_to!r} needs the {module} package, which is not installed.",
                         where="train option 'report_to'", hint=f"pip install {module}, or use report_to: none.")
    return [cfg.report_to]


def _optim_name(optimizer: str) -> str:
    """The Trainer's optimizer name: torch's fused AdamW kernel for plain AdamW (same update, one kernel for
    all 420 adapter tensors instead of a dozen foreach ops: 7 vs 28 ms per step on the 2-core CPU)."""
    import torch

    major, minor = (int(v) for v in torch.__version__.split(".")[:2])
    if optimizer == "adamw" and (major, minor) >= (2, 4):  # fused AdamW runs on CPU from torch 2.4
        return "adamw_torch_fused"
    return OPTIM_NAMES[optimizer]


def _training_args(session, cfg: TrainConfig, out: Path, name: str, has_val: bool, eval_steps: int,
                   n_val: int | None = None):
    """The Trainer's arguments. The eval batch is capped at the held-out row count: the Trainer's eval loop
    repeats each batch's loss ``batch_size`` times, so ``batch_size: 4294967295`` allocated 16 GB to score 2 rows
    (the same rows form the one batch either way, so the eval loss is unchanged)."""
    from transformers import TrainingArguments

    from ...precision import trainer_precision
    from ..scale.distributed import is_sharded

    use_cpu = not str(session.device).startswith("cuda")
    # the load's resolved compute dtype decides (never torch.cuda.is_bf16_supported(): True when emulated on T4)
    flags = trainer_precision(session.config.compute_dtype, session.device)
    sampling = "group_by_length" if cfg.group_by_length and not cfg.packing else "random"
    eval_batch = cfg.batch_size if n_val is None else min(cfg.batch_size, max(1, n_val))
    return TrainingArguments(
        output_dir=str(out), run_name=name, seed=cfg.seed, data_seed=cfg.seed, use_cpu=use_cpu,
        bf16=flags["bf16"], fp16=flags["fp16"],
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=eval_batch,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        logging_strategy="steps", logging_steps=cfg.logging_steps,
        eval_strategy="steps" if has_val else "no", eval_steps=eval_steps if has_val else None,
        save_strategy="steps" if cfg.save_steps else "no", save_steps=cfg.save_steps or 500, save_total_limit=2,
        metric_for_best_model="eval_loss" if has_val else None, greater_is_better=False,
        optim=_optim_name(cfg.optimizer), gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        train_sampling_strategy=sampling, remove_unused_columns=False, prediction_loss_only=True,
        save_only_model=is_sharded(session.model),  # a base sharded at load: checkpoints hold the adapter only
        report_to=_report_to(cfg), disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=False,
    )


def _flops_and_peak(session, cfg: TrainConfig):
    """The step-FLOPs model and the matmul peak (``cfg.peak_flops``, else measured once per process) for the MFU."""
    from ..forecast.flops import flops_model, matmul_peak

    try:
        fm = flops_model(session.model)
    except (AttributeError, TypeError):  # an architecture whose config lacks the usual fields: no MFU
        return None, None
    if cfg.peak_flops:
        return fm, float(cfg.peak_flops)
    return fm, matmul_peak(fm.shapes, session.config.compute_dtype, str(session.device)) or None


# --------------------------------------------------------------------------- train
def train(session, data: Any = None, on_event=None, **options: Any) -> TrainResult:
    """Train the session's active adapter; options are :class:`~qlora_nb.config.TrainConfig` fields."""
    if data is not None:
        options["data"] = data
    from . import preflight

    cfg = checked_options(options)
    out, name = output_dir(session, cfg)
    preflight.prepare_output_dir(session, cfg, out)  # a file, unwritable, or not ours: before the data work
    resume_from = find_checkpoint(out) if cfg.resume else None
    prep, planned, cfg = checked_data(session, cfg, warmup_given="warmup_steps" in options)
    fingerprint = preflight.data_fingerprint(prep.train_rows, prep.val_rows)
    if resume_from is not None:
        preflight.check_resume(out, resume_from, fingerprint, planned)
    if not cfg.resume and out.exists() and any(out.iterdir()):
        import shutil

        for old in out.glob("checkpoint-*"):  # a fresh run must never resume or report the old run's checkpoints
            shutil.rmtree(old, ignore_errors=True)
    preflight.mark_run(out, fingerprint, cfg)
    eval_steps = cfg.eval_steps or max(1, planned // 5)

    unsubscribe = session.events.subscribe(on_event) if on_event is not None else None
    try:
        return _fit(session, cfg, prep, out, name, resume_from, planned, eval_steps)
    finally:
        if unsubscribe:
            unsubscribe()


def _fit(session, cfg: TrainConfig, prep: Prepared, out: Path, name: str, resume_from: str | None,
         planned: int, eval_steps: int) -> TrainResult:
    from transformers import EarlyStoppingCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from ...data.collate import ListDataset, make_collator
    from ...quiet import quiet_libraries
    from ..model.quantize import guard_cpu_repack
    from ..speed.cpu_norm import fused_rms_norm
    from ..speed.cpu_speed import fused_lora
    from .loss import training_attention

    model, tok = session.model, session.tokenizer
    guard_cpu_repack(model)
    session.stop_requested = False
    session.template, session.val_rows, session.chat_format = prep.template, prep.val_rows, prep.chat
    history: list[dict[str, Any]] = []
    state: dict[str, Any] = {"step_time": 0.0, "interrupted": False, "max_steps": planned, "resume_from": resume_from}
    from ..interrupts import InterruptFlag, checkpoint_after_abort

    flag = InterruptFlag()
    with quiet_libraries():
        args = _training_args(session, cfg, out, name, bool(prep.val), eval_steps, len(prep.val))
        trainer = _trainer_class()(
            model=model, args=args, train_dataset=ListDataset(prep.train),
            eval_dataset=ListDataset(prep.val) if prep.val else None,
            data_collator=make_collator(tok, packing=cfg.packing), processing_class=tok,
        )
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    state["trainer"] = trainer
    trainer.flops_model, state["peak_flops"] = _flops_and_peak(session, cfg)
    from ..forecast.plan import run_prediction

    state["predicted_step_s"] = run_prediction(session, cfg, prep.train, planned)
    trainer.add_callback(make_callback(session, cfg, prep, flag, history, state))
    if cfg.eval_metric is not None:
        from .task_metric import TrainingMetric

        trainer.task_metric = TrainingMetric(session, prep.template, prep.val_rows[: cfg.eval_metric_rows],
                                             cfg.eval_metric)
    early = None
    if cfg.early_stopping_patience:
        early = EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience)
        trainer.add_callback(early)
    use_cache = getattr(model.config, "use_cache", None)
    model.config.use_cache = False
    attention = training_attention(model, session.device, cfg.cutoff_len)
    if attention:
        model.get_base_model().set_attn_implementation(attention)
    aborted, oom = False, None
    started = time.perf_counter()
    try:
        with quiet_libraries(), flag, PeakRssSampler(session):
            try:
                if trainer.task_metric is not None:  # the base's score, once, before any step
                    base = trainer.task_metric.score_base()
                    session.events.emit("eval", step=0, base=True,
                                        eval_metric=base.score, eval_metric_hits=base.hits,
                                        eval_metric_rows=base.total, eval_metric_s=base.seconds,
                                        eval_metric_name=trainer.task_metric.name)
                with fused_lora(model, cfg.fused_lora), fused_rms_norm(model, cfg.fused_lora):
                    output = trainer.train(resume_from_checkpoint=resume_from)
                metrics = dict(output.metrics)
            except KeyboardInterrupt:  # a second interrupt outside a step's critical part: drop the step
                aborted, metrics = True, {}
                model.zero_grad(set_to_none=True)
            except Exception as exc:  # out of memory: stop cleanly, keep the checkpoints, explain (issue 9)
                from ..lifecycle import drop_traceback, is_oom
                from .task_metric import MetricError, stopped_by_metric

                if isinstance(exc, MetricError):  # the user's metric failed at an eval: stop at a checkpoint
                    raise stopped_by_metric(trainer, out, exc) from None
                if not is_oom(exc):
                    raise
                oom = drop_traceback(exc)  # its frames hold the step's activations
    finally:
        model.config.use_cache = use_cache
        if attention:
            model.get_base_model().set_attn_implementation("sdpa")
        if cfg.gradient_checkpointing and hasattr(model, "gradient_checkpointing_disable"):
            model.gradient_checkpointing_disable()
        guard_cpu_repack(model)
    if oom is not None:
        from ..lifecycle import oom_during_training

        raise oom_during_training(session, trainer, cfg.to_dict(), out, oom)
    note = checkpoint_after_abort(trainer, out)[1] if aborted else ""
    session.optimizer = trainer.optimizer
    interrupted = aborted or state["interrupted"]
    st = trainer.state
    stopped_early = bool(early is not None and not interrupted and st.global_step < st.max_steps
                         and early.early_stopping_patience_counter >= cfg.early_stopping_patience)
    tokens = trainer.tokens
    metrics.update({"steps": st.global_step, "max_steps": st.max_steps, "train_tokens": tokens,
                    "tokens_per_s": tokens / state["step_time"] if state["step_time"] else 0.0,
                    "step_time_s": state["step_time"], "wall_s": time.perf_counter() - started,
                    "train_flops": trainer.flops, "peak_flops": state["peak_flops"],
                    "train_rows": len(prep.train), "val_rows": len(prep.val), "peak_rss": session.peak_rss})
    if prep.val and not interrupted:
        metrics.setdefault("eval_loss", next((h["eval_loss"] for h in reversed(history) if "eval_loss" in h), None))
    if trainer.task_metric is not None:
        metrics.update(trainer.task_metric.final_metrics())
    check = None if interrupted else _forecast_check(session, history, state.get("predicted_step_s"))
    if check is not None:  # the steady step was >30% off its forecast: kept in the metrics, said once per process
        metrics["forecast_check"] = check
    if check is not None and check["said"]:
        note = f"{note}\n{check['note']}".strip()
        import warnings

        warnings.warn(check["note"], stacklevel=3)
    adapter_dir = save_run(session, cfg, out, metrics, prep)
    save_state(trainer, out)
    from ..lifecycle import last_complete_checkpoint

    last = last_complete_checkpoint(out)
    checkpoint = Path(last) if last else None
    result = TrainResult(history=history, adapter_dir=adapter_dir, metrics=metrics, interrupted=interrupted,
                         stopped_early=stopped_early, truncated_rows=prep.truncated, output_dir=out,
                         checkpoint=checkpoint, config=cfg.to_dict(), note=note)
    session.adapters.setdefault(session.active_adapter, {}).update(
        {"source": "trained", "adapter_dir": str(adapter_dir), "run_name": name})
    session.runs.append(result)
    # the checkpoint a view lists is this run's last one; an older one (a resumed run that ended between saves)
    # is still result.checkpoint for resume, but listing it as the run's output reads as if it had not moved
    current = checkpoint is not None and checkpoint.name == f"checkpoint-{st.global_step}"
    session.events.emit("train_end", steps=st.global_step, interrupted=interrupted, stopped_early=stopped_early,
                        adapter_dir=str(adapter_dir), checkpoint=str(checkpoint) if current else None,
                        metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float, str, type(None)))})
    return result


