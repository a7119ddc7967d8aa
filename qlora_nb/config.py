"""The option declarations: what every magic and its Python twin accept (save, merge, export, launch, the
playground and the quant report in :mod:`qlora_nb.command_options`).

One declaration per concept: each field (via :func:`~qlora_nb.options.option`)
carries its help text, accepted values, range and aliases, and that drives
validation, the magics' flags and ``%magic?`` help, the widgets' controls,
YAML round-trips and the error messages. A concept that several classes share
(quantization, LoRA, batch and sequence length, the optimizer) is a
:class:`~qlora_nb.options.Concept` below, used by each class that has it, so
``%qlora_plan`` forecasts with the defaults a default ``%%qlora_train`` runs.
Names follow ``TrainingArguments`` / ``LoraConfig`` where they overlap; the
short names the issues use (``alpha``, ``dropout``, ``targets``, ``epochs``…)
are the canonical ones and the library names are accepted as aliases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import QloraError, did_you_mean
from .naming import check_adapter_name, check_folder_name, check_path_text
from .options import Concept, OptionsBase, option
from .units import parse_memory

DTYPES = ("bfloat16", "float16", "float32")
SEED_MAX = 2**32 - 1  # numpy's seed range; transformers' set_seed seeds numpy too
DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
OPTIMIZERS = ("adamw", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit")
METHODS = ("full", "lora", "qlora")

# The notebook names a magic binds when none is given (``--session`` / ``-o``), for magics and views alike.
SESSION_NAME = "qlora"
TRAIN_RESULT_NAME = "train_result"

# ---------------------------------------------------------------- shared concepts (one declaration each)
MODEL = Concept("model", "smollm2-135m", "Alias from the built-in table (smollm2-135m), a local HF folder, a .gguf "
                "file or a hub id. Planning also takes the architectures table's names (llama-2-7b) and a "
                "config.json, and fetches only a hub model's config.")
QUANT = Concept("quant", "nf4", "4-bit data type: NormalFloat4 (QLoRA) or FP4 (E2M1).", choices=("nf4", "fp4"))
DOUBLE_QUANT = Concept("double_quant", True, "Quantize the per-block absmax constants to 8 bits in blocks of 256.")
COMPUTE_DTYPE = Concept(
    "compute_dtype", "auto", "dtype of the matmuls, activations and 16-bit weights. auto: bfloat16 on CPU and on "
    "GPUs of compute capability >= 8.0, float16 (with a loss scaler) on older GPUs such as T4/V100 (see "
    "qlora_nb.precision); both cost 2 bytes, which is what the planner counts.",
    choices=("auto",) + DTYPES + tuple(DTYPE_ALIASES))
LORA_R = Concept("r", 16, "LoRA rank r: each adapted matrix gets r*(d_in+d_out) trainable parameters.", min=1,
                 flags=("-r",))
DROPOUT = Concept("dropout", 0.05, "Dropout on the LoRA input (QLoRA: 0.05-0.1); > 0 keeps a dropped copy of each "
                  "adapted input for backward.", min=0.0, max=0.99, aliases=("lora_dropout",))
TARGETS = Concept("targets", factory=lambda: ["all-linear"], help="Modules that get adapters: 'all-linear' (QLoRA) "
                  "or module names such as q_proj,v_proj.", aliases=("target_modules",))
DORA = Concept("dora", False, "Weight-decomposed LoRA (DoRA): adds a magnitude vector (d_out) per adapted matrix.",
               aliases=("use_dora",))
BATCH_SIZE = Concept("batch_size", 8, "Rows per device per step.", min=1, aliases=("per_device_train_batch_size",))
GRADIENT_CHECKPOINTING = Concept("gradient_checkpointing", False, "Recompute activations in backward to save "
                                 "memory.")
OPTIMIZER = Concept("optimizer", "adamw", "Optimizer; paged_* fall back to unpaged on CPU.", choices=OPTIMIZERS,
                    aliases=("optim",))
OVERWRITE = Concept("overwrite", False, "Replace a folder that qlora_nb wrote before (a saved adapter, merged "
                    "model, exported job or run). A folder holding anything else, the notebook's folder and the "
                    "base model's folder are never replaced.")
# The longest tokenized row: training truncates there (cutoff_len) and the planner forecasts rows that long
# (seq_len, its worst case), so both read this one default and help.
_SEQ_DEFAULT, _SEQ_HELP = 256, ("Longest tokenized row: longer rows are truncated (and counted). The planner "
                                "forecasts rows this long, the worst case of a batch.")
CUTOFF_LEN = Concept("cutoff_len", _SEQ_DEFAULT, _SEQ_HELP, min=8, aliases=("max_seq_length", "max_length"))
SEQ_LEN = Concept("seq_len", _SEQ_DEFAULT, _SEQ_HELP, min=1, aliases=("cutoff_len", "max_seq_length"))
# Training length and data: what %%qlora_train runs and what the planner prices in seconds for the run.
TRAIN_DATA = Concept("data", None, "JSON/JSONL/CSV/parquet path, 'demo', a hub dataset name, or $variable (list of "
                     "dicts / DataFrame) from the notebook. The planner tokenizes it as training does for tokens "
                     "per row and the run's total time (None: every row seq_len tokens, time per step only).")
EPOCHS = Concept("epochs", 3.0, "Passes over the training rows (ignored when max_steps > 0).", min=0,
                 min_exclusive=True, aliases=("num_train_epochs",))
MAX_STEPS = Concept("max_steps", -1, "Stop after this many optimizer steps (-1: use epochs).", min=-1)
GRADIENT_ACCUMULATION = Concept("gradient_accumulation_steps", 1, "Micro-batches accumulated per optimizer step "
                                "(time per step scales with it).", min=1)
GGUF_COLUMN = Concept("gguf", None, "A .gguf file (from %qlora_merge DIR --format gguf) shown as one more column "
                      "'gguf', as transformers loads it back; held in memory until %qlora_unload.")
GGUF_ENGINE = Concept("engine", "transformers", "What serves the gguf column: transformers (the file loaded back "
                      "in fp32) or llama.cpp (llama-cpp-python, as users deploy it).", choices=("transformers", "llama.cpp"))
CPU_OFFLOAD = Concept("cpu_offload", False, "FSDP only: keep the parameter shards, gradients and optimizer states "
                      "in host RAM.")


def _dtype(value: str) -> str:
    return DTYPE_ALIASES.get(value, value)


def _check_engine(engine: str, gguf: str | None, where: str) -> None:
    if engine != "transformers" and gguf is None:
        raise QloraError(f"engine {engine} serves the gguf column, but no GGUF file is given.", where=where,
                         hint="Add the file: --gguf FILE --engine llama.cpp (gguf=FILE, engine='llama.cpp').")


def _check_targets(targets: list[Any], where: str) -> list[str]:
    if not targets:
        raise QloraError("targets is empty.", where=where, hint="Use 'all-linear' or name modules such as "
                                                                 "q_proj,v_proj.")
    return [str(t) for t in targets]


@dataclass
class LoadConfig(OptionsBase):
    """How a model is loaded, quantized and given LoRA adapters (QLoRA paper defaults)."""

    _kind: ClassVar[str] = "load option"

    model: str = MODEL()
    bits: int = option(4, "Base weight storage: 4 (QLoRA), 8 (LLM.int8) or 16 (plain LoRA).", choices=(4, 8, 16))
    quant: str = QUANT()
    double_quant: bool = DOUBLE_QUANT()
    quant_storage: str = option("uint8", "dtype the packed 4-bit weights are stored in; FSDP-QLoRA needs the float "
                                         "dtype of the other weights (bfloat16) so it can shard them.",
                                choices=("uint8",) + DTYPES)
    compute_dtype: str = COMPUTE_DTYPE()
    r: int = LORA_R()
    alpha: float = option(32.0, "LoRA alpha: the update is scaled by alpha/r (alpha/sqrt(r) with rslora).",
                          min=0, min_exclusive=True, aliases=("lora_alpha",))
    dropout: float = DROPOUT()
    targets: list[str] = TARGETS()
    dora: bool = DORA()
    rslora: bool = option(False, "Rank-stabilised scaling alpha/sqrt(r).", aliases=("use_rslora",))
    adapter: str | None = option(None, "A saved adapter folder to load instead of fresh adapters.")
    adapter_name: str = option("default", "Name of the (first) adapter in the session.")
    trust_remote_code: bool = option(False, "Run model code from the model folder/hub. Off unless you trust it.")
    allow_pickle: bool = option(False, "Allow reading pickle (.bin) weights; only safetensors otherwise.")
    seed: int = option(0, "Seed for the LoRA initialisation.", min=0, max=SEED_MAX)
    device: str = option("auto", "Where to run: auto (cuda when available), cpu or cuda.", choices=("auto", "cpu", "cuda"))

    def validate(self) -> None:
        self.compute_dtype = _dtype(self.compute_dtype)
        self.targets = _check_targets(self.targets, self.where("targets"))
        check_adapter_name(self.adapter_name, "load option 'adapter_name'")
        if self.quant != "nf4" and self.bits != 4:  # the 4-bit data type means nothing for an 8/16-bit base
            raise QloraError(f"quant {self.quant} is a 4-bit data type, but bits is {self.bits}.",
                             where="load option 'quant'", hint="Use bits: 4 with quant: fp4, or drop quant.")


EVAL_METRICS = ("exact_match", "contains", "json_match")  # scored by qlora_nb.data.scoring


@dataclass
class TrainConfig(OptionsBase):
    """One training run. A body of just ``data: my.jsonl`` trains with these defaults."""

    _kind: ClassVar[str] = "train option"

    data: Any = TRAIN_DATA()
    template: str | None = option(None, "Format string; everything before {output} is the prompt. "
                                        "None: chat template for 'messages' rows, or prompt/completion columns.")
    cutoff_len: int = CUTOFF_LEN()
    val_split: float = option(0.1, "Fraction (or count when >= 1) of rows held out for evaluation.", min=0.0)
    epochs: float = EPOCHS()
    max_steps: int = MAX_STEPS()
    batch_size: int = BATCH_SIZE()
    gradient_accumulation_steps: int = GRADIENT_ACCUMULATION()
    learning_rate: float = option(2e-4, "Peak learning rate (QLoRA: 2e-4 for 7B, 1e-4 for 65B).", min=0,
                                  min_exclusive=True, aliases=("lr",))
    lr_scheduler_type: str = option("cosine", "Learning-rate schedule.",
                                    choices=("linear", "cosine", "constant", "constant_with_warmup"))
    warmup_steps: int = option(5, "Linear warm-up steps.", min=0)
    weight_decay: float = option(0.0, "AdamW weight decay.", min=0.0)
    max_grad_norm: float = option(0.3, "Gradient clipping (QLoRA: 0.3).", min=0, min_exclusive=True)
    early_stopping_patience: int | None = option(None, "Stop after this many evals without eval_loss improving.",
                                                 min=1)
    eval_steps: int | None = option(None, "Evaluate (and run probes) every N steps; None: about 5 times a run.",
                                    min=1)
    logging_steps: int = option(1, "Emit a step event every N steps.", min=1)
    save_steps: int | None = option(None, "Checkpoint the adapter every N steps (always at the end).", min=1)
    group_by_length: bool = option(True, "Batch rows of similar length so little compute is spent on padding.")
    packing: bool = option(False, "Concatenate rows into cutoff_len blocks (no padding at all).")
    completion_only: bool = option(True, "Mask the prompt from the loss: learn only the completion.")
    optimizer: str = OPTIMIZER()
    gradient_checkpointing: bool = GRADIENT_CHECKPOINTING()
    seed: int = option(42, "Seed for shuffling, dropout and the split.", min=0, max=SEED_MAX)
    output_dir: str | None = option(None, "Where checkpoints and the final adapter go (default: runs/<name>).")
    run_name: str | None = option(None, "Name of this run (default: run-<date>-<time>); output_dir defaults to "
                                        "runs/<run_name>.")
    report_to: str = option("none", "Extra loggers beside the run history: none, trackio, tensorboard or wandb "
                                    "(when installed).", choices=("none", "trackio", "wandb", "tensorboard"))
    resume: bool = option(False, "Continue from the last checkpoint in output_dir with the same schedule.",
                          aliases=("resume_from_checkpoint",))
    probes: list[str] = option(factory=list, help="Prompts generated base vs adapted at each eval.")
    n_probes: int = option(2, "How many validation rows to use as probes when probes is empty.", min=0)
    overwrite: bool = OVERWRITE()
    fused_lora: bool = option(True, "CPU: train each LoRA layer and each Llama-family RMSNorm as one fused op "
                                    "(same maths; dropout masks from 16-bit draws, rate rounded to 1/65536); "
                                    "false: peft's and transformers' own modules.")
    peak_flops: float | None = option(None, "Matmul peak FLOP/s for the MFU in step events; None: measured once "
                                            "per process at the model's shapes (about 0.3 s).", min=0)

    eval_metric: Any = option(None, "Task metric scored at each eval by greedy generation on validation rows: "
                                    "exact_match, contains, json_match or a Python callable f(prediction, "
                                    "reference) -> bool or 0..1 (None: off).")
    eval_metric_rows: int = option(16, "How many validation rows eval_metric scores.", min=1)

    def validate(self) -> None:
        if self.data is None:
            raise QloraError("no data given.", where="train option 'data'",
                             hint="Add `data: path.jsonl` (or csv/parquet/'demo'/$variable) to the cell body.")
        if self.max_steps == 0:  # the Trainer reads 0 as "use epochs": 3 full epochs for a user who asked for none
            raise QloraError("max_steps 0 would train no step, yet the Trainer reads it as 'run every epoch'.",
                             where="train option 'max_steps'",
                             hint="Give a number of steps >= 1, or -1 (the default) to train for `epochs`.")
        if self.run_name is not None:  # one folder under runs/: never ../x, a/b or a name with a line break
            check_folder_name(self.run_name, "train option 'run_name'", "runs")
        if self.output_dir is not None:
            check_path_text(self.output_dir, "train option 'output_dir'")
        if isinstance(self.eval_metric, str) and self.eval_metric.strip().lower() in ("", "none", "null", "off"):
            self.eval_metric = None
        if isinstance(self.eval_metric, str) and self.eval_metric.strip().lower() in EVAL_METRICS:
            self.eval_metric = self.eval_metric.strip().lower()
        elif self.eval_metric is not None and (isinstance(self.eval_metric, str) or not callable(self.eval_metric)):
            raise QloraError(f"{self.eval_metric!r} is not a task metric.", where="train option 'eval_metric'",
                             hint=did_you_mean(str(self.eval_metric), EVAL_METRICS) + " Or pass a Python function "
                                  "f(prediction, reference) that returns a bool or a number from 0 to 1.")


@dataclass
class GenerateConfig(OptionsBase):
    """Decoding settings shared by base and adapted generations (same seed for both)."""

    _kind: ClassVar[str] = "generation option"

    max_new_tokens: int = option(48, "Tokens generated per output.", min=1, max=4096)
    sample: bool = option(False, "Sample instead of greedy decoding.", aliases=("do_sample",))
    temperature: float = option(0.7, "Sampling temperature (only with sample); below 0.01 the logits overflow to "
                                     "inf/NaN (for the most likely token every time, turn sample off).", min=0.01)
    top_p: float = option(0.95, "Nucleus sampling mass (only with sample).", min=0, max=1, min_exclusive=True)
    seed: int = option(0, "Seed used before each generation so base and adapted draw the same noise.", min=0,
                       max=SEED_MAX)
    adapters: list[str] = option(factory=list, help="Adapter names to compare with the base, comma-separated on the command line "
                                                     "(default: all).")
    chat: bool | None = option(None, "Apply the chat template (default: yes when the tokenizer has one and "
                                     "no training template is set).")
    logprobs: bool = option(False, "Score each output token's log-prob: compare shades each token by how much the "
                                   "adapter changed it, the playground shows each column's mean.")
    gguf: str | None = GGUF_COLUMN()
    engine: str = GGUF_ENGINE()

    def validate(self) -> None:
        _check_engine(self.engine, self.gguf, self.where("engine"))


PLAN_MAX_SEQ_LEN, PLAN_MAX_BATCH = 2**24, 2**16  # tokens (longest published contexts: ~10M), rows per device


@dataclass
class PlanConfig(OptionsBase):
    """What ``%qlora_plan`` / :func:`qlora_nb.plan` predict memory for (defaults: the QLoRA recipe)."""

    _kind: ClassVar[str] = "plan option"

    model: str = MODEL()
    gpu: str | None = option(None, "Memory to fit in: '24GB', '80GiB', '512MB' or a number of GB (GB = GiB, as GPU "
                                   "makers count). Default: this machine's RAM on cpu, the visible GPU or 24GB.")
    method: str = option("qlora", "full fine-tuning, lora on a 16-bit base, or qlora on a 4-bit base.",
                         choices=METHODS)
    # Not LoadConfig's bits (default 4): here the method decides unless bits is given (lora + bits 8 = LLM.int8).
    bits: int | None = option(None, "Base storage override: 4, 8 (LLM.int8 + LoRA) or 16; default from method.",
                              choices=(4, 8, 16))
    quant: str = QUANT()
    double_quant: bool = DOUBLE_QUANT()
    r: int = LORA_R()
    targets: list[str] = TARGETS()
    dropout: float = DROPOUT()
    dora: bool = DORA()
    seq_len: int = SEQ_LEN()
    batch_size: int = BATCH_SIZE()
    gradient_checkpointing: bool = GRADIENT_CHECKPOINTING()
    optimizer: str = OPTIMIZER()
    compute_dtype: str = COMPUTE_DTYPE()
    device: str = option("cuda", "Where training runs: cuda (allocator bytes) or cpu (process RSS).",
                         choices=("cuda", "cpu"))
    max_steps: int = MAX_STEPS()
    epochs: float = EPOCHS()
    gradient_accumulation_steps: int = GRADIENT_ACCUMULATION()
    data: Any = TRAIN_DATA()
    gpus: int = option(1, "Devices training together (one process each); the verdict is for one of them.", min=1)
    strategy: str = option("ddp", "How the devices share the model: ddp replicates it, fsdp shards it.",
                           choices=("ddp", "fsdp"))
    cpu_offload: bool = CPU_OFFLOAD()
    interconnect: str = option("pcie", "How several GPUs talk, for the time forecast: pcie (about 20 GB/s) or "
                                       "nvlink (about 150 GB/s, SXM boards).", choices=("pcie", "nvlink"))

    def validate(self) -> None:
        self.compute_dtype = _dtype(self.compute_dtype)
        self.targets = _check_targets(self.targets, self.where("targets"))
        for name, top, why in (("seq_len", PLAN_MAX_SEQ_LEN, "above every model's context (about 10M at most)"),
                               ("batch_size", PLAN_MAX_BATCH, "more rows per device per step than any device holds")):
            if getattr(self, name) > top:  # a plan of 10**12 tokens is arithmetic, not advice
                raise QloraError(f"{name} {getattr(self, name):,} is {why}; this planner stops at {top:,}.",
                                 where=self.where(name), hint="Plan what you would train with: seq_len your longest "
                                 "row, at most the model's context (max_position_embeddings); batch_size per device.")
        if self.gpu is not None:
            parse_memory(self.gpu)  # refuse "0GB", "-3", "lots" here, naming the option
        if self.method == "full" and self.bits not in (None, 16):
            raise QloraError(f"full fine-tuning trains 16-bit weights, not a {self.bits}-bit base.",
                             where="plan option 'bits'", hint="Use method: qlora (4-bit) or lora with bits: 8.")
        if self.cpu_offload and self.strategy != "fsdp":
            raise QloraError("cpu_offload moves FSDP's shards to host RAM; it needs strategy fsdp.",
                             where="plan option 'cpu_offload'", hint="Add --strategy fsdp, or drop --cpu-offload.")
        if self.method == "qlora" and self.bits == 16:
            raise QloraError("qlora means a quantized base; bits 16 is plain lora.", where="plan option 'bits'",
                             hint="Use method: lora, or bits: 4/8.")
        if self.quant != "nf4" and self.base_bits != 4:
            raise QloraError(f"quant {self.quant} is a 4-bit data type, but the base is {self.base_bits}-bit.",
                             where="plan option 'quant'", hint="Use method: qlora (or bits: 4) with quant: fp4.")

    @property
    def lora_dropout(self) -> float:
        """The old PlanConfig name of ``dropout`` (still accepted as a keyword too)."""
        return self.dropout

    @property
    def base_bits(self) -> int:
        if self.bits is not None:
            return self.bits
        return 4 if self.method == "qlora" else 16
