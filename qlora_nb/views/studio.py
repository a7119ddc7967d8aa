"""The studio: one panel to choose data and options, see the memory forecast, and Train / Stop / Resume.

Everything it does goes through the engine's public calls, the same ones the
magics use: :func:`qlora_nb.data.preview.load_preview` (the training's own
load → validate → tokenize), ``session.plan`` for the forecast and
``session.train`` for Train and Resume. The options are generated from
:class:`~qlora_nb.config.TrainConfig`'s field metadata, so names, defaults and
validation are those of ``%%qlora_train``, and :meth:`Studio.to_code` writes
the ``%%qlora_train`` cell that reproduces the configuration.

Threads: Train and Resume run on the kernel's main thread (a click is a comm
message, handled there when no cell is running), so the engine's SIGINT
handling and the CPU guards behave as in a cell. Stop is the embedded
:class:`~qlora_nb.views.dashboard.TrainingDashboard`'s stop: its comm is
routed to a kernel subshell where ipykernel ≥ 7.4 allows it
(:mod:`qlora_nb.views.kernel_comm`); elsewhere the panel says that Stop needs
the kernel's Interrupt while the run is busy (which the engine turns into a
stop at the next step boundary with a checkpoint).
"""

from __future__ import annotations

import re
from typing import Any

import traitlets

from ..config import SESSION_NAME, TRAIN_RESULT_NAME, TrainConfig
from ..errors import QloraError
from ..textsplit import interpolate, variable_name
from .base import QloraWidget, esm
from .session_guard import SessionGone, needs_session, unloaded_text
from .studio_preview import file_signature, preview_state
from .workbench import default_values, error_text, option_specs, workbench_css, yaml_value

UNLOADED = unloaded_text("studio", "to train", "%qlora_studio")


class Studio(QloraWidget):
    """Data, options, memory forecast and Train/Stop/Resume for one session; ``view`` embeds the dashboard."""

    _esm = esm("studio.js")
    UNLOADED = UNLOADED
    SESSION_FREE = ("resolved_data", "typed_options", "config", "to_code")
    _css = workbench_css()

    title = traitlets.Unicode("").tag(sync=True)
    data = traitlets.Unicode("").tag(sync=True)  # a path, 'demo', a hub name, or a notebook variable ($name / name)
    template = traitlets.Unicode("").tag(sync=True)
    specs = traitlets.List().tag(sync=True)
    values = traitlets.Dict().tag(sync=True)  # option name -> value as typed (validated into TrainConfig)
    field_errors = traitlets.Dict().tag(sync=True)
    preview = traitlets.Dict().tag(sync=True)
    data_error = traitlets.Unicode("").tag(sync=True)
    forecast = traitlets.Dict().tag(sync=True)
    status = traitlets.Unicode("idle").tag(sync=True)  # idle, running, stopped, done, error
    can_resume = traitlets.Bool(False).tag(sync=True)
    stop_live = traitlets.Bool(False).tag(sync=True)
    in_kernel = traitlets.Bool(False).tag(sync=True)
    dashboard_id = traitlets.Unicode("").tag(sync=True)
    run = traitlets.Dict().tag(sync=True)  # first_step, step, checkpoint_step, resumed_from
    message = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    code = traitlets.Unicode("").tag(sync=True)

    def __init__(self, session: Any, *, data: Any = None, session_name: str = SESSION_NAME,
                 result_name: str = TRAIN_RESULT_NAME,
                 user_ns: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session = session
        self.session_name = session_name
        self.result_name = result_name
        self.user_ns = user_ns if user_ns is not None else (_user_ns() or {})
        self.result: Any = None
        self.dashboard: Any = None
        self._preview: Any = None
        self._preview_key: tuple | None = None
        self._slot: Any = None
        self._container: Any = None
        from .kernel_comm import current_kernel

        self.in_kernel = current_kernel() is not None
        self.title = f"studio · {getattr(getattr(session, 'config', None), 'model', '')}"
        with self.hold_trait_notifications():
            self.specs = option_specs()
            self.values = default_values()
            if data is not None:
                self.data = data if isinstance(data, str) else ""
                if not isinstance(data, str):
                    self._data_object = data
        self.observe(self._changed, names=["data", "template", "values"])
        self.on_msg(self._on_front_msg)
        try:
            self.refresh()
        except SessionGone:  # opened on an unloaded session: the panel shows why
            pass

    _data_object: Any = None

    # ------------------------------------------------------------ options
    def resolved_data(self) -> Any:
        """What ``data`` names: a notebook variable (``$df`` or ``df``) or the text itself (path, 'demo', hub).

        ``$name`` and ``$$text`` follow :func:`qlora_nb.textsplit.interpolate`, the magic's rule, so
        ``$$x.jsonl`` is the file ``$x.jsonl`` here as in ``%%qlora_train``.
        """
        text = self.data.strip()
        if not text:
            return self._data_object
        name = self._variable(text)
        if name is not None:
            return interpolate(f"${name}", self.user_ns, "studio data")
        return interpolate(text, {}, "studio data")

    def _variable(self, text: str) -> str | None:
        """The notebook variable ``text`` names (``$name``, or a bare name bound in the notebook), else None."""
        name = variable_name(text)
        if name is None and text.isidentifier() and text in self.user_ns and text != "demo":
            name = text
        return name

    @traitlets.validate("values")
    def _canonical_values(self, proposal: dict[str, Any]) -> dict[str, Any]:
        """``lr`` is ``learning_rate``: an alias key moves to its option's name (issue 25, class 9)."""
        aliases = TrainConfig.aliases()
        out = dict(proposal["value"] or {})
        for key in [k for k in out if str(k).replace("-", "_") in aliases]:
            out[aliases[str(key).replace("-", "_")]] = out.pop(key)
        return out

    def typed_options(self) -> dict[str, Any]:
        """The options that differ from TrainConfig's defaults, typed and validated one by one."""
        out, errors = {}, {}
        defaults = default_values()
        for name, raw in self.values.items():
            value = None if raw == "" else raw
            try:
                name = TrainConfig._canonical(str(name))  # an unknown name is this field's error
                typed = getattr(TrainConfig.from_options({"data": "demo", name: value}), name)
            except QloraError as exc:
                errors[name] = str(exc)
                continue
            if typed != defaults.get(name):
                out[name] = typed
        self.field_errors = errors
        return out

    def config(self) -> TrainConfig:
        """The TrainConfig a Train click runs (raises the same QloraError as ``%%qlora_train``)."""
        opts = self.typed_options()
        if self.field_errors:
            raise QloraError(next(iter(self.field_errors.values())))  # already "train option 'x': … hint"
        if self.template.strip():
            opts["template"] = self.template
        return TrainConfig.from_options({"data": self.resolved_data(), **opts})

    def to_code(self) -> str:
        """The exact ``%%qlora_train`` cell for the current data and options."""
        line = f"%%qlora_train -o {self.result_name}"
        if self.session_name != SESSION_NAME:
            line += f" --session {self.session_name}"
        text = self.data.strip()
        if not text:  # passed as an object: name the variable holding it
            data = next((f"${k}" for k, v in self.user_ns.items() if v is self._data_object and k.isidentifier()
                         and not k.startswith("_")), "$data") if self._data_object is not None else "$data"
        elif self._variable(text) is not None:
            data = f"${self._variable(text)}"
        else:  # literal text (a path, 'demo', a hub name); yaml_value escapes a leading $ the magic would read
            data = yaml_value(interpolate(text, {}, "studio data"))
        body = [f"data: {data}"]
        if self.template.strip():
            body.append(f"template: {yaml_value(self.template)}")
        opts = self.typed_options()
        for name, raw in self.values.items():  # an invalid field is written as typed, so the cell fails alike
            key = TrainConfig.aliases().get(str(name), str(name))
            if key in opts:
                body.append(f"{key}: {yaml_value(opts[key])}")
            elif name in self.field_errors:
                body.append(f"{name}: {yaml_value(None if raw == '' else raw)}")
        return "\n".join([line, *body]) + "\n"

    # ------------------------------------------------------------ preview / forecast
    def _changed(self, change: dict[str, Any]) -> None:
        try:
            self.refresh()
        except Exception as exc:  # a typed value reaches Python through the comm: never a silent kernel-log error
            self.status, self.error = "error", error_text(exc)

    @needs_session
    def refresh(self) -> None:
        """Recompute the preview, the forecast, the field errors and the code (after every change)."""
        opts = self.typed_options()
        cutoff = opts.get("cutoff_len", TrainConfig.cutoff_len)
        self._refresh_preview(cutoff, opts)
        self._refresh_forecast(opts, cutoff)
        self.code = self.to_code()

    def _refresh_preview(self, cutoff: int, opts: dict[str, Any] | None = None) -> None:
        from ..data.preview import load_preview

        try:
            data = self.resolved_data()
            if data is None:
                self._preview, self._preview_key = None, None
                self.preview, self.data_error = {}, ""
                return
            key = (id(data) if not isinstance(data, str) else (data, file_signature(data)), self.template)
            if key != self._preview_key:
                self._preview = load_preview(data, self.template.strip() or None, self.session.tokenizer)
                self._preview_key = key
            self.preview = preview_state(self._preview, self.session.tokenizer, cutoff, opts or {})
            self.data_error = ""
        except QloraError as exc:
            self._preview, self._preview_key = None, None
            self.preview, self.data_error = {}, str(exc)
        except Exception as exc:  # a preview must never break the panel
            self._preview, self._preview_key = None, None
            self.preview, self.data_error = {}, error_text(exc, "studio data")

    def _refresh_forecast(self, opts: dict[str, Any], cutoff: int) -> None:
        from ..engine.forecast.plan import studio_forecast

        try:
            self.forecast = studio_forecast(self.session, opts, self._preview, cutoff)
        except Exception as exc:  # the forecast is advice; training itself still checks
            self.forecast = {"error": error_text(exc, "memory forecast")}

    # ------------------------------------------------------------ actions
    def _on_front_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        try:
            self._handle(content.get("event"))
        except Exception as exc:  # shown in the panel: a comm handler's exception would only reach the kernel log
            self.status, self.error = "error", error_text(exc)
        finally:  # the front end drops its "starting" state even when the status did not change (error → error)
            self.send({"event": "handled"})

    def _handle(self, event: Any) -> None:
        if event == "train":
            self.train()
        elif event == "resume":
            self.train(resume=True)
        elif event == "stop":  # only reached when no dashboard is live (the front end stops the dashboard)
            self.stop()
        elif event == "refresh":
            self.refresh()

    @needs_session
    def stop(self) -> None:
        if self.dashboard is not None:
            self.dashboard.request_stop()
        else:
            self.session.request_stop()

    @needs_session
    def train(self, resume: bool = False) -> Any:
        """Run ``session.train`` with the panel's options (the same call as ``%%qlora_train``), dashboard inside."""
        if self.status == "running":
            return None
        self.error = self.message = ""
        try:
            cfg = self.config()
        except QloraError as exc:
            self.status, self.error = "error", str(exc)
            return None
        options = {**self.typed_options(), "data": cfg.data}  # what the copied cell's body holds
        if cfg.template:
            options["template"] = cfg.template
        previous = self.result
        if resume:
            if previous is None or previous.output_dir is None:
                self.status, self.error = "error", "studio: nothing to resume yet. Press Train first."
                return None
            options.update(resume=True, output_dir=str(previous.output_dir))
        try:
            dash = self._new_dashboard(cfg, previous if resume else None)
        except Exception as exc:  # a click must always end in a visible state, never a silent comm-handler error
            self.status, self.error = "error", error_text(exc)
            return None
        run: dict[str, Any] = {"resumed_from": self.run.get("checkpoint_step") if resume else None}
        unsubscribe = self.session.events.subscribe(lambda e: _track(run, e))
        self.status, self.can_resume = "running", False
        self.run = dict(run)
        try:
            with dash:
                result = self.session.train(**options)
        except KeyboardInterrupt:
            self.status, self.message = "stopped", "interrupted: the weights are kept as they were at that step."
            return None
        except BaseException as exc:
            self.status, self.error = "error", error_text(exc)
            if getattr(dash, "comm", None) is None and self._slot is not None:
                self._slot.children = ()
            return None
        finally:
            unsubscribe()
        self.result = result
        if self.user_ns is not None and self.result_name:
            self.user_ns[self.result_name] = result
        ckpt = _checkpoint_step(result.checkpoint)
        self.run = {**run, "checkpoint_step": ckpt, "steps": result.metrics.get("steps")}
        # one status with the dashboard: a Stop that lands after the last step still reads "stopped" in both
        self.status = "stopped" if result.interrupted or getattr(dash, "status", "") == "stopped" else "done"
        self.can_resume = bool(result.interrupted and result.checkpoint is not None)
        parts = [f"adapter saved in {result.adapter_dir}"]
        if result.interrupted and ckpt is not None:
            parts.insert(0, f"stopped at step {ckpt}; checkpoint {result.checkpoint}")
        if result.truncated_rows:
            parts.append(f"{result.truncated_rows} rows were truncated to cutoff_len={cfg.cutoff_len}")
        self.message = " · ".join(parts)
        return result

    def _new_dashboard(self, cfg: TrainConfig, previous: Any) -> Any:
        import ipywidgets

        from .dashboard import TrainingDashboard

        dash = TrainingDashboard.for_session(self.session, cfg, title="training (studio)")
        if previous is not None:  # resuming: the curve continues where the stopped run left it
            dash.continue_from(previous.history)
        if self._slot is None:
            self._slot = ipywidgets.VBox([])
        self._slot.children = (dash.view,)
        if self.dashboard is not None and self.dashboard is not dash:
            self.dashboard.detach()
        self.dashboard = dash
        self.dashboard_id = dash.model_id
        self.stop_live = dash.stop_live
        return dash

    # ------------------------------------------------------------ display
    @property
    def view(self):
        """The panel above the slot where the live dashboard appears."""
        if self._container is None:
            import ipywidgets

            if self._slot is None:
                self._slot = ipywidgets.VBox([])
            self._container = ipywidgets.VBox([self, self._slot])
        return self._container

    def _repr_mimebundle_(self, **kwargs: Any):
        bundle = self.view._repr_mimebundle_(**kwargs)
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, {})
        data = dict(data or {})
        data["text/plain"] = self.text()
        return data, meta

    def text(self) -> str:
        lines = [f"{self.title}: {self.status}"]
        p = self.preview
        if self.data_error:
            lines.append(f"data error: {self.data_error}")
        elif p:
            lines.append(f"data {p['source']}: {p['n_rows']} rows (+{p['n_val']} held out), longest {p['longest']} "
                         f"tokens, {p['truncated']} longer than cutoff_len={p['cutoff_len']}")
        else:
            lines.append("data: none chosen yet")
        f = self.forecast
        if f.get("total"):
            lines.append(f"memory forecast: {f['total'] / 2**20:.0f} MiB of {f['limit_bytes'] / 2**20:.0f} MiB "
                         f"({f.get('verdict')})")
        if self.error:
            lines.append(f"error: {self.error}")
        if self.message:
            lines.append(self.message)
        lines += ["cell:", self.code.rstrip()]
        return "\n".join(lines)


def _track(run: dict[str, Any], event: dict[str, Any]) -> None:
    """Record the first and the last step of this run (the studio's only subscriber; a dict write per step)."""
    if event.get("kind") == "step":
        run.setdefault("first_step", event.get("step"))
        run["step"] = event.get("step")


def _checkpoint_step(path: Any) -> int | None:
    m = re.search(r"checkpoint-(\d+)$", str(path or ""))
    return int(m.group(1)) if m else None


def _user_ns() -> dict[str, Any] | None:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return None
    shell = get_ipython()
    return shell.user_ns if shell is not None else None
