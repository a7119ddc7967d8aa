"""What runs beside the Trainer's math: hooks turned into events, interrupts, and the peak-memory sampler.

The callback turns the Trainer's hooks into plain events on ``session.events``
(step, eval, probe, ledger, poll, train_begin/end); the dashboard, the text
printer and tests subscribe to them. The engine never imports a view.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ...config import TrainConfig
from ...data.scoring import resolve
from ..interrupts import InterruptFlag
from .probes import generate_probes, probe_input

# what engine/training/task_metric.py adds to an eval's metrics (the Trainer's log entry) when eval_metric is set
TASK_KEYS = ("eval_metric", "eval_metric_hits", "eval_metric_rows", "eval_metric_s")


class PeakRssSampler:
    """Samples process RSS every 50 ms in a thread: the CPU peak happens mid-backward, between hooks."""

    def __init__(self, session) -> None:
        from ...memory.ledger import reset_peak, rss_bytes

        reset_peak(session.device)  # on CUDA the ledger reads max_memory_allocated: this run's peak only
        self._rss = rss_bytes
        self.session = session
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="qlora-rss")

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._rss())
            self.session.peak_rss = self.peak

    def __enter__(self):
        self.session.peak_rss = self.peak
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
        self.session.peak_rss = max(self.peak, self._rss())



def eta_seconds(elapsed: float, step_time: float, done: int, step: int, max_steps: int, start: int,
                eval_every: int | None) -> float:
    """Time left: the mean step over the steps left, plus the mean eval (with its probes) over the evals left.

    Spreading the evals' time over the steps (elapsed / steps done) made the ETA jump at every eval (browser
    review: a 22 s probe pass). At a step's log its own eval has not run yet (Trainer logs, then evaluates).
    """
    left = max(0, max_steps - step)
    per_step = step_time / max(1, done)
    if not eval_every:
        return per_step * left
    ran = (step - 1) // eval_every - start // eval_every  # evals finished before this step's
    to_run = max_steps // eval_every - (step - 1) // eval_every
    per_eval = max(0.0, elapsed - step_time) / ran if ran > 0 else 0.0
    return per_step * left + per_eval * to_run

def make_callback(session, cfg: TrainConfig, prep: Any, flag: InterruptFlag, history: list, state: dict):
    from transformers import TrainerCallback

    events = session.events
    probe_prompts = list(cfg.probes) or [prep.template.prompt(r) for r in prep.val_rows[: cfg.n_probes]]
    probe_inputs = list(cfg.probes) or [probe_input(prep.template, r) for r in prep.val_rows[: cfg.n_probes]]
    # held-out probes carry their reference, scored by the run's task metric (exact match when none is set)
    probe_refs = [] if cfg.probes else [prep.template.completion(r) for r in prep.val_rows[: cfg.n_probes]]
    probe_score = resolve(cfg.eval_metric or "exact_match")
    probe_tokens = 48
    if not cfg.probes and prep.val and cfg.n_probes:
        longest = max(sum(t != -100 for t in ex["labels"]) for ex in prep.val[: cfg.n_probes])
        probe_tokens = min(96, longest + 4)
    ledger_every = max(1, state["max_steps"] // 20)

    class EventsCallback(TrainerCallback):
        """Trainer hooks → ``session.events`` (step, eval, probe, ledger, poll, train_begin/end)."""

        base_outputs: tuple[list[str], list[bool]] | None = None  # (texts, truncated), generated once

        def on_train_begin(self, args, st, control, **kw):
            state["t_begin"] = time.perf_counter()
            state["start_step"] = st.global_step
            events.emit("train_begin", max_steps=st.max_steps, epochs=args.num_train_epochs,
                        train_rows=len(prep.train), val_rows=len(prep.val), truncated_rows=prep.truncated,
                        output_dir=args.output_dir, resumed_from=state.get("resume_from"),
                        config=cfg.to_dict(), predicted_step_s=state.get("predicted_step_s"),
                        start_step=st.global_step)  # a resumed run starts at its checkpoint's step

        def on_pre_optimizer_step(self, args, st, control, **kw):
            flag.critical = True  # a second interrupt now waits for the step (see engine.interrupts)

        def on_step_begin(self, args, st, control, **kw):
            state["t_step"] = time.perf_counter()
            state["tokens_at_step"] = state["trainer"].tokens
            state["flops_at_step"] = state["trainer"].flops

        def on_step_end(self, args, st, control, **kw):
            dt = time.perf_counter() - state["t_step"]
            tokens = state["trainer"].tokens - state["tokens_at_step"]
            state["step_time"] += dt
            state["last"] = {"tokens": tokens, "dt": dt, "flops": state["trainer"].flops - state["flops_at_step"]}
            events.emit("poll", step=st.global_step)
            flag.critical = False
            if flag.hit or session.stop_requested:
                state["interrupted"] = True
                control.should_training_stop = True
                control.should_save = True
                flag.critical = True  # the final checkpoint is written next: let it finish

        def on_optimizer_step(self, args, st, control, **kw):
            # After optimizer.step() and before zero_grad(): gradients and optimizer state both exist.
            step = st.global_step + 1
            if step % ledger_every == 0 or step == state["start_step"] + 1:
                session.optimizer = kw.get("optimizer")
                events.emit("ledger", step=step, ledger=session.ledger().to_event())

        def on_log(self, args, st, control, logs=None, **kw):
            logs = logs or {}
            if "loss" not in logs or "last" not in state:
                return
            last = state["last"]
            done = st.global_step - state["start_step"]
            elapsed = time.perf_counter() - state["t_begin"]
            by_steps = getattr(args.eval_strategy, "value", args.eval_strategy) == "steps"
            eta = eta_seconds(elapsed, state["step_time"], done, st.global_step, st.max_steps, state["start_step"],
                              args.eval_steps if by_steps else None)
            predicted = state.get("predicted_step_s")
            if predicted and done <= 1:  # step 1 pays for warm-up: the forecast knows the steady step better
                eta = predicted * max(0, st.max_steps - st.global_step)
            entry = {"step": st.global_step, "loss": float(logs["loss"]),
                     "learning_rate": float(logs.get("learning_rate", 0.0)),
                     "tokens_per_s": last["tokens"] / last["dt"] if last["dt"] > 0 else 0.0,
                     "epoch": float(st.epoch or 0.0), "max_steps": st.max_steps, "eta_s": eta}
            if "grad_norm" in logs:
                entry["grad_norm"] = float(logs["grad_norm"])
            entry["step_s"] = last["dt"]
            if predicted:
                entry["predicted_step_s"] = predicted
            if state.get("peak_flops") and last["dt"] > 0 and last["flops"]:
                entry["mfu"] = last["flops"] / last["dt"] / state["peak_flops"]  # see engine/forecast/flops.py
            history.append(entry)
            events.emit("step", **entry)

        def on_evaluate(self, args, st, control, metrics=None, **kw):
            if not metrics or "eval_loss" not in metrics:
                return
            loss = float(metrics["eval_loss"])
            entry = {"eval_loss": loss, **{k: metrics[k] for k in TASK_KEYS if k in metrics}}
            if history and history[-1]["step"] == st.global_step:
                history[-1].update(entry)
            else:
                history.append({"step": st.global_step, **entry})
            events.emit("eval", step=st.global_step, **entry)
            if probe_prompts:
                def stopping() -> bool:  # a Stop or an interrupt during the probes ends them at the next token
                    return flag.hit or session.stop_requested

                events.emit("phase", phase="probes", step=st.global_step, text=f"probes at step {st.global_step}")
                if self.base_outputs is None:
                    self.base_outputs = generate_probes(session, probe_prompts, probe_tokens, base=True,
                                                        should_stop=stopping)
                adapted, cut = generate_probes(session, probe_prompts, probe_tokens, should_stop=stopping)
                if stopping():  # the run stops here, with its checkpoint; half-written probes are not shown
                    self.base_outputs = None if len(self.base_outputs[0]) != len(probe_prompts) else self.base_outputs
                    state["interrupted"] = True
                    control.should_training_stop = True
                    control.should_save = True
                    return
                base_texts, base_cut = self.base_outputs
                for i, p in enumerate(probe_prompts):  # `truncated`: stopped at max_new_tokens, not at EOS
                    events.emit("probe", step=st.global_step, prompt=p, input=probe_inputs[i], base=base_texts[i],
                                adapted=adapted[i],
                                adapter=session.active_adapter, max_new_tokens=probe_tokens,
                                truncated={"base": base_cut[i], "adapted": cut[i]},
                                reference=probe_refs[i] if i < len(probe_refs) else None,
                                score={"base": probe_score(base_texts[i], probe_refs[i]),
                                       "adapted": probe_score(adapted[i], probe_refs[i])}
                                if i < len(probe_refs) else None)

        def on_train_end(self, args, st, control, **kw):
            session.optimizer = kw.get("optimizer", session.optimizer)

    return EventsCallback()


