"""``Session``: one loaded base model with its named LoRA adapters, and everything done to it.

The magics are thin wrappers over these methods; scripts and tests call them
directly. Heavy modules are imported inside the methods that need them, so that
``import qlora_nb`` and ``%load_ext`` stay free of torch and transformers. None of
those in-function imports is there to break a cycle: no module of the engine
imports this one at run time (the sub-packages name ``Session`` only in type
hints), which ``tests/test_layers.py`` checks.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..command_options import ExportOptions, MergeOptions, SaveOptions
from ..config import GenerateConfig, LoadConfig
from ..errors import QloraError
from ..events import EventBus

if TYPE_CHECKING:
    from ..memory.ledger import Ledger


class Session:
    """A base model (frozen, 4/8/16-bit) plus named LoRA adapters, tokenizer and config.

    Attributes:
        model: the peft model; ``model.disable_adapter()`` gives the base in place.
        tokenizer: the model's tokenizer (pad token set).
        config: the :class:`LoadConfig` used, with ``model_path`` the local folder loaded.
        events: an :class:`EventBus` that training/compare/ledger updates are emitted on.
        adapters: name -> info dict (``source``: fresh, trained or a folder).
        runs: TrainResults of this session, newest last.
    """

    def __init__(self, model, tokenizer, config: LoadConfig, model_path: Path, device: str,
                 load_seconds: float = 0.0) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.model_path = Path(model_path)
        self.device = device
        self.load_seconds = load_seconds
        self.events = EventBus()
        self.adapters: dict[str, dict[str, Any]] = {config.adapter_name: {"source": "fresh"}}
        self.runs: list[Any] = []
        self.attached: dict[str, Any] = {}  # column -> an exported GGUF loaded back beside the model (attached.py)
        self.template: Any = None  # the training data.template.Template, reused by compare
        self.val_rows: list[dict[str, str]] = []  # the last run's held-out rows (compare's default prompts)
        self.chat_format = False  # the last run's rows were chat `messages`
        self.stop_requested = False  # set by request_stop() (the dashboard's Stop button)
        self.optimizer = None  # the last training run's optimizer, for the ledger
        self.peak_rss: int | None = None
        self.base_fingerprint: dict[str, Any] = {}

    # ----------------------------------------------------------------- state
    @property
    def active_adapter(self) -> str:
        return self.model.active_adapter

    def set_adapter(self, name: str) -> None:
        if not isinstance(name, str) or name not in self.adapters:
            from .model.adapters import no_adapter

            raise no_adapter(name, self.adapters)
        self.model.set_adapter(name)

    def request_stop(self) -> None:
        """Ask a running training to stop at the next step boundary (and save a checkpoint)."""
        self.stop_requested = True

    def ledger(self, measure: bool = True) -> Ledger:
        """Bytes by component from the real tensors (see :mod:`qlora_nb.memory.ledger`)."""
        from ..memory.ledger import measure_ledger

        return measure_ledger(self.model, self.optimizer, device=self.device, peak_bytes=self.peak_rss,
                              measure=measure)

    @property
    def params(self) -> dict[str, int]:
        return self.ledger(measure=False).params

    def __repr__(self) -> str:
        if type(self.model).__name__ == "UnloadedModel":  # after unload(): no tensors left to count
            return f"<qlora_nb.Session {self.config.model!r} (unloaded)>"
        p = self.params
        return (f"<qlora_nb.Session {self.config.model!r} {self.config.bits}-bit"
                f"{' ' + self.config.quant if self.config.bits == 4 else ''}, adapters={list(self.adapters)}, "
                f"{p['trainable']:,}/{p['total']:,} trainable>")

    # --------------------------------------------------------------- actions
    def train(self, data: Any = None, *, on_event=None, **options: Any):
        """Train the active adapter; see :class:`qlora_nb.config.TrainConfig` for options."""
        from .rollback import rolled_back_on_error
        from .training.train import train

        with rolled_back_on_error(self):
            return train(self, data=data, on_event=on_event, **options)

    def generate(self, prompt: str, *, adapter: str | None = None, **options: Any) -> str:
        """One generation; ``adapter=None`` uses the active adapter, ``"base"`` disables adapters."""
        from .arguments import require_optional_name
        from .generation.generate import generate_one
        from .rollback import rolled_back_on_error

        if not isinstance(prompt, str):
            raise QloraError(f"prompt must be text, got {'None' if prompt is None else type(prompt).__name__}.",
                             where="prompt", hint="Pass the prompt as a str (use compare() for several).")
        with rolled_back_on_error(self):
            return generate_one(self, prompt, adapter=require_optional_name(adapter, "adapter"), **options)

    def compare(self, prompts: Any, *, on_event=None, **options: Any):
        """Base vs adapted generations from the same weights; see :mod:`qlora_nb.engine.generation.generate`."""
        from .generation.generate import compare
        from .rollback import rolled_back_on_error

        if prompts is None:
            raise QloraError("prompts must be a str or a list of str, got None.", where="prompts",
                             hint='Pass e.g. "What is 2+2?" or ["first prompt", "second prompt"].')
        with rolled_back_on_error(self):
            return compare(self, prompts, on_event=on_event, **options)

    def stream(self, prompt: str, *, columns: list[str] | None = None, logprobs: bool = False, on_event=None,
               **options: Any):
        """One prompt streamed token by token from the base and each adapter (the playground's engine call).

        Every token is an event on ``session.events`` (and ``on_event``); see :mod:`qlora_nb.engine.generation.stream`.
        """
        from .generation.stream import stream
        from .rollback import rolled_back_on_error

        if not isinstance(prompt, str):
            raise QloraError(f"prompt must be text, got {'None' if prompt is None else type(prompt).__name__}.",
                             where="prompt", hint="Pass the prompt as a str (use compare() for several).")
        with rolled_back_on_error(self):
            return stream(self, prompt, columns=columns, logprobs=logprobs, on_event=on_event, **options)

    def chat(self, messages: Any, *, adapters: list[str] | None = None, on_event=None, **options: Any):
        """Reply to a conversation from the base and each adapter, side by side; see :mod:`qlora_nb.engine.generation.chat`.

        ``messages``: ``[{"role": "user", "content": "..."}, ...]`` (or ``{column: messages}``, one per column).
        Returns a :class:`~qlora_nb.engine.generation.chat.ChatResult` (``.replies``, ``.prompt``, token counts).
        """
        from .generation.chat import chat
        from .rollback import rolled_back_on_error

        with rolled_back_on_error(self):
            return chat(self, messages, adapters=adapters, on_event=on_event, **options)

    def save(self, directory: str | Path, *, overwrite: bool = SaveOptions.overwrite,
             adapter: str | None = SaveOptions.adapter, format: str = SaveOptions.format) -> Path:
        """Write an adapter as a PEFT folder (``format="peft"``) or a GGUF LoRA for llama.cpp/Ollama (``"gguf"``);
        the keywords are :class:`~qlora_nb.command_options.SaveOptions`."""
        from .arguments import require_bool, require_optional_name, require_path
        from .export.export import save_adapter

        directory = require_path(directory, "directory")
        if str(format).strip().lower() == "gguf":
            from .export.gguf_lora import save_gguf_lora

            return save_gguf_lora(self, directory, overwrite=require_bool(overwrite, "overwrite"),
                                  adapter=require_optional_name(adapter, "adapter"))
        if str(format).strip().lower() != "peft":
            raise QloraError(f"{format!r} is not an adapter format.", where="--format",
                             hint="Accepted: peft (the default, a PEFT folder) or gguf (a llama.cpp LoRA file).")
        return save_adapter(self, directory, overwrite=require_bool(overwrite, "overwrite"),
                            adapter=require_optional_name(adapter, "adapter"))

    def load_adapter(self, directory: str | Path, *, name: str | None = None, allow_pickle: bool = False) -> str:
        from .arguments import require_bool, require_optional_name, require_path
        from .export.export import load_adapter
        from .rollback import rolled_back_on_error

        directory = require_path(directory, "directory", "an adapter folder path")
        name, allow_pickle = require_optional_name(name, "name"), require_bool(allow_pickle, "allow_pickle")
        with rolled_back_on_error(self):  # a failure inside peft leaves the adapters as they were
            return load_adapter(self, directory, name=name, allow_pickle=allow_pickle)

    def merge(self, directory: str | Path, *, dtype: str = MergeOptions.dtype, overwrite: bool = MergeOptions.overwrite,
              format: str = MergeOptions.format, **options: Any):
        """A verified merged copy: a Hugging Face folder (``format="hf"``) or one GGUF file (``"gguf"``; ``"ollama"``
        adds a Modelfile; ``outtype=``; ``base_only=True``: the base alone as the session holds it, for a GGUF
        LoRA). The keywords are :class:`~qlora_nb.command_options.MergeOptions` (plus ``verbose``…)."""
        from .arguments import require_bool, require_path
        from .export.merge import merge
        from .rollback import rolled_back_on_error

        directory = require_path(directory, "directory")
        if not isinstance(dtype, str):
            raise QloraError(f"dtype must be text such as 'bf16', got a {type(dtype).__name__}.", where="dtype")
        from .export.gguf_export import export_gguf, normalize_format
        from .interrupts import interrupted_as_error

        fmt = normalize_format(format)
        # an interrupt: one line; the folder is written under a temporary name and the session rolled back
        stopped = interrupted_as_error(f"merging into {directory}", "merge",
                                       f"Nothing was written to {directory} and the session is as it was.")
        if fmt != "hf":
            if "base_only" in options:
                options["base_only"] = require_bool(options["base_only"], "base_only")
            with stopped, rolled_back_on_error(self):
                return export_gguf(self, directory, ollama=fmt == "ollama",
                                   overwrite=require_bool(overwrite, "overwrite"), **options)
        if "outtype" in options:
            raise QloraError("outtype applies to GGUF exports only.", where="outtype",
                             hint='Pass format="gguf" (or --format gguf), or use dtype= for a Hugging Face merge.')
        if options.pop("base_only", False):
            raise QloraError("base_only writes a GGUF base for a GGUF LoRA; a Hugging Face merge has no base-only "
                             "form.", where="--base-only",
                             hint="Pass format='gguf' (--format gguf); the base's own folder is the HF form.")
        with stopped, rolled_back_on_error(self):
            return merge(self, directory, dtype=dtype, overwrite=require_bool(overwrite, "overwrite"), **options)

    def export(self, directory: str | Path, *, overwrite: bool = ExportOptions.overwrite, **options: Any) -> Path:
        """train.py + accelerate configs; options are :class:`~qlora_nb.command_options.ExportOptions` and TrainConfig's."""
        from .arguments import require_bool, require_path
        from .export.accelerate_export import export_script

        directory = require_path(directory, "directory")
        return export_script(self, directory, overwrite=require_bool(overwrite, "overwrite"), **options)

    def launch(self, processes: int = 2, *, fsdp: bool = False, cpu_offload: bool = False, on_event=None,
               **options: Any):
        """Train this session's configuration on ``processes`` ranks (``accelerate launch``), then load the
        adapter here; options are TrainConfig fields plus ``port``, ``directory`` and ``overwrite``."""
        from .export.accelerate_export import train_options
        from .scale.launch import LAUNCH_ONLY, check_launch, launch
        from .training.setup import check_run

        # everything %%qlora_train refuses, refused here in the kernel, before a folder or a process exists;
        # relative paths (data, directory) resolve against the kernel's working folder: the notebook's
        check_launch(self, processes, bool(fsdp), bool(cpu_offload))
        check_run(self, train_options(self, {k: v for k, v in options.items() if k not in LAUNCH_ONLY}))
        return launch(self, processes, fsdp=fsdp, cpu_offload=cpu_offload, on_event=on_event, **options)

    def plan(self, *, measure: bool = False, **options: Any):
        """The planner's prediction (memory and time) for this session's model and settings.

        ``measure=True`` (``%qlora_plan --measure``) also times a few real steps of each setup that fits,
        on throwaway copies, and leaves this session exactly as it was.
        """
        from .forecast.plan import plan_session

        return plan_session(self, measure=measure, loader=load, **options)

    def quant_report(self, **options: Any):
        """4-bit reconstruction error and perplexity; options are :class:`~qlora_nb.command_options.QuantReportOptions`."""
        from .model.quant_report import quant_report

        return quant_report(self, **options)

    def attach_gguf(self, path: Any, engine: str = GenerateConfig.engine) -> Any:
        """Load an exported .gguf back beside the model as the column ``gguf`` of compare, playground and chat;
        ``engine="llama.cpp"`` serves it with llama-cpp-python instead of transformers."""
        from .generation.attached import attach_gguf

        cfg = GenerateConfig.from_options({"gguf": str(path), "engine": engine})  # a bad engine name fails here
        return attach_gguf(self, path, cfg.engine)

    def detach_gguf(self) -> int:
        """Free the attached GGUF (:meth:`attach_gguf`); the bytes released."""
        from .generation.attached import detach

        return detach(self)

    def unload(self) -> int:
        """Drop the model; returns the bytes of weights released (see ``%qlora_unload``)."""
        from .lifecycle import unload_session

        return unload_session(self)


def load(model: str | None = None, **options: Any) -> Session:
    """Load ``model`` 4-bit (by default) and attach LoRA: the Python twin of ``%qlora_load``.

    Options are :class:`qlora_nb.config.LoadConfig` fields (``bits``, ``quant``,
    ``double_quant``, ``compute_dtype``, ``r``, ``alpha``, ``dropout``,
    ``targets``, ``dora``, ``rslora``, ``adapter``…).
    """
    from ..quiet import quiet_libraries
    from .model.models import resolve_model
    from .model.quantize import attach_lora, load_base, pick_device, resolve_dtype
    from .model.tokenizer import load_tokenizer

    if model is not None:
        options["model"] = model
    cfg = LoadConfig.from_options(options)
    started = time.perf_counter()
    device = pick_device(cfg)
    resolve_dtype(cfg, device)  # 'auto' -> bf16 (CPU, sm80+) or fp16 (T4/V100): one dtype for load, bnb and Trainer
    path = resolve_model(cfg.model)
    from .interrupts import interrupted_as_error
    from .lifecycle import oom_guard

    with interrupted_as_error(f"loading {cfg.model}", "qlora_nb.load",
                              "No new session was made; a session loaded before is kept."), \
            quiet_libraries(), oom_guard("qlora_nb.load"):  # out of memory: one QloraOOMError with advice
        tokenizer = load_tokenizer(path, cfg)
        base = load_base(path, cfg, device)
        if cfg.adapter:
            from .export.export import open_adapter

            peft_model = open_adapter(base, cfg.adapter, name=cfg.adapter_name, allow_pickle=cfg.allow_pickle,
                                      model_path=path)
        else:
            peft_model = attach_lora(base, cfg)
    session = Session(peft_model, tokenizer, cfg, path, device, time.perf_counter() - started)
    from ..memory.ledger import reset_peak

    reset_peak(device)  # CUDA: the breakdown's residual starts after loading, not at quantization's temporaries
    if cfg.adapter:
        session.adapters[cfg.adapter_name] = {"source": str(cfg.adapter)}
    from .model.models import model_fingerprint

    session.base_fingerprint = model_fingerprint(path)
    return session
