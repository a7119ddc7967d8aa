"""The option declarations: what ``%qlora_load``, ``%%qlora_train``, ``%qlora_compare`` and ``%qlora_plan`` accept.

One declaration per option: each field (via :func:`~qlora_nb.options.option`)
carries its help text, accepted values, range and aliases, and that drives
validation, the magics' flags and ``%magic?`` help, YAML round-trips and the
error messages. Names follow ``TrainingArguments`` / ``LoraConfig`` where they
overlap; the short names the issues use (``alpha``, ``targets``, ``epochs``…)
are the canonical ones and the library names are accepted as aliases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import QloraError, did_you_mean
from .options import OptionsBase, option
from .units import parse_memory

DTYPES = ("bfloat16", "float16", "float32")
DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}


@dataclass
class LoadConfig(OptionsBase):
    """How a model is loaded, quantized and given LoRA adapters (QLoRA paper defaults)."""

    _kind: ClassVar[str] = "load option"

    model: str = option("smollm2-135m", "Alias from the built-in table, a local HF folder, a .gguf file or a hub id.")
    bits: int = option(4, "Base weight storage: 4 (QLoRA), 8 (LLM.int8) or 16 (plain LoRA).", choices=(4, 8, 16))
    quant: str = option("nf4", "4-bit data type: NormalFloat4 (QLoRA) or FP4 (E2M1).", choices=("nf4", "fp4"))
    double_quant: bool = option(True, "Quantize the per-block absmax constants to 8 bits in blocks of 256.")
    quant_storage: str = option("uint8", "dtype the packed 4-bit weights are stored in; FSDP-QLoRA needs the float "
                                         "dtype of the other weights (bfloat16) so it can shard them.",
                                choices=("uint8",) + DTYPES)
    compute_dtype: str = option(
        "auto", "dtype of the matmuls and of 16-bit weights. auto: bfloat16 on CPU and on GPUs of compute "
                "capability >= 8.0, float16 (with a loss scaler) on older GPUs such as T4/V100 "
                "(see qlora_nb.precision).", choices=("auto",) + DTYPES + tuple(DTYPE_ALIASES)
    )
    r: int = option(16, "LoRA rank r: each adapted matrix gets r*(d_in+d_out) trainable parameters.", min=1,
                    flags=("-r",))
    alpha: float = option(32.0, "LoRA alpha: the update is scaled by alpha/r (alpha/sqrt(r) with rslora).",
                          min=0, min_exclusive=True, aliases=("lora_alpha",))
    dropout: float = option(0.05, "Dropout on the LoRA input (QLoRA: 0.05-0.1).", min=0.0, max=0.99,
                            aliases=("lora_dropout",))
    targets: list[str] = option(
        factory=lambda: ["all-linear"],
        help="Modules that get adapters: 'all-linear' (QLoRA) or module names such as q_proj,v_proj.",
        aliases=("target_modules",),
    )
    dora: bool = option(False, "Weight-decomposed LoRA (DoRA).", aliases=("use_dora",))
    rslora: bool = option(False, "Rank-stabilised scaling alpha/sqrt(r).", aliases=("use_rslora",))
    adapter: str | None = option(None, "A saved adapter folder to load instead of fresh adapters.")
    adapter_name: str = option("default", "Name of the (first) adapter in the session.")
    trust_remote_code: bool = option(False, "Run model code from the model folder/hub. Off unless you trust it.")
    allow_pickle: bool = option(False, "Allow reading pickle (.bin) weights; only safetensors otherwise.")
    seed: int = option(0, "Seed for the LoRA initialisation.", min=0)
    device: str = option("auto", "Where to run: auto (cuda when available), cpu or cuda.", choices=("auto", "cpu", "cuda"))

    def validate(self) -> None:
        self.compute_dtype = DTYPE_ALIASES.get(self.compute_dtype, self.compute_dtype)
        if not self.targets:
            raise QloraError("targets is empty.", where="load option 'targets'",
                             hint="Use 'all-linear' or name modules such as q_proj,v_proj.")
        self.targets = [str(t) for t in self.targets]


EVAL_METRICS = ("exact_match", "contains", "json_match")  # scored by qlora_nb.data.scoring
OPTIMIZERS = ("adamw", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit")


@dataclass
class TrainConfig(OptionsBase):
    """One training run. A body of just ``data: my.jsonl`` trains with these defaults."""

    _kind: ClassVar[str] = "train option"

    data: Any = option(None, "JSON/JSONL/CSV/parquet path, 'demo', a hub dataset name, or $variable "
                             "(list of dicts / DataFrame) from the notebook.")
    template: str | None = option(None, "Format string; everything before {output} is the prompt. "
                                        "None: chat template for 'messages' rows, or prompt/completion columns.")
    cutoff_len: int = option(256, "Longest tokenized example; longer rows are truncated and counted.", min=8,
                             aliases=("max_seq_length", "max_length"))
    val_split: float = option(0.1, "Fraction (or count when >= 1) of rows held out for evaluation.", min=0.0)
    epochs: float = option(3.0, "Passes over the training rows (ignored when max_steps > 0).", min=0,
                           min_exclusive=True, aliases=("num_train_epochs",))
    max_steps: int = option(-1, "Stop after this many optimizer steps (-1: use epochs).", min=-1)
    batch_size: int = option(8, "Rows per device per step.", min=1, aliases=("per_device_train_batch_size",))
    gradient_accumulation_steps: int = option(1, "Micro-batches accumulated per optimizer step.", min=1)
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
    optimizer: str = option("adamw", "Optimizer; paged_* fall back to unpaged on CPU.", choices=OPTIMIZERS,
                            aliases=("optim",))
    gradient_checkpointing: bool = option(False, "Recompute activations in backward to save memory.")
    seed: int = option(42, "Seed for shuffling, dropout and the split.", min=0)
    output_dir: str | None = option(None, "Where checkpoints and the final adapter go (default: runs/<name>).")
    run_name: str | None = option(None, "Name of this run (default: run-<date>-<time>); output_dir defaults to "
                                        "runs/<run_name>.")
    report_to: str = option("none", "Extra loggers beside the run history: none, trackio, tensorboard or wandb "
                                    "(when installed).", choices=("none", "trackio", "wandb", "tensorboard"))
    resume: bool = option(False, "Continue from the last checkpoint in output_dir with the same schedule.",
                          aliases=("resume_from_checkpoint",))
    probes: list[str] = option(factory=list, help="Prompts generated base vs adapted at each eval.")
    n_probes: int = option(2, "How many validation rows to use as probes when probes is empty.", min=0)
    overwrite: bool = option(False, "Reuse a non-empty output_dir that holds another run.")
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

    _kind: ClassVar[str] = "compare option"

    max_new_tokens: int = option(48, "Tokens generated per output.", min=1, max=4096)
    sample: bool = option(False, "Sample instead of greedy decoding.", aliases=("do_sample",))
    temperature: float = option(0.7, "Sampling temperature (only with sample).", min=0, min_exclusive=True)
    top_p: float = option(0.95, "Nucleus sampling mass (only with sample).", min=0, max=1, min_exclusive=True)
    seed: int = option(0, "Seed used before each generation so base and adapted draw the same noise.", min=0)
    adapters: list[str] = option(factory=list, help="Adapter names to compare with the base, comma-separated on the command line "
                                                     "(default: all).")
    chat: bool | None = option(None, "Apply the chat template (default: yes when the tokenizer has one and "
                                     "no training template is set).")


@dataclass
class PlanConfig(OptionsBase):
    """What ``%qlora_plan`` / :func:`qlora_nb.plan` predict memory for (defaults: the QLoRA recipe)."""

    _kind: ClassVar[str] = "plan option"

    model: str = option("smollm2-135m", "Name from the architectures table, a local config.json/model folder "
                                        "or a hub id (only its config is fetched).")
    gpu: str | None = option(None, "Memory to fit in: '24GB', '80GiB', '512MB' or a number of GB (GB = GiB, as GPU "
                                   "makers count). Default: this machine's RAM on cpu, the visible GPU or 24GB.")
    method: str = option("qlora", "full fine-tuning, lora on a 16-bit base, or qlora on a 4-bit base.",
                         choices=("full", "lora", "qlora"))
    bits: int | None = option(None, "Base storage override: 4, 8 (LLM.int8 + LoRA) or 16; default from method.",
                              choices=(4, 8, 16))
    quant: str = option("nf4", "4-bit data type.", choices=("nf4", "fp4"))
    double_quant: bool = option(True, "Quantize the absmax constants (8 bits, blocks of 256).")
    r: int = option(16, "LoRA rank.", min=1, flags=("-r",))
    targets: list[str] = option(factory=lambda: ["all-linear"], help="LoRA targets: all-linear or module names.",
                                aliases=("target_modules",))
    lora_dropout: float = option(0.05, "LoRA dropout (> 0 keeps a dropped fp32 copy of each adapted input).",
                                 min=0.0, max=0.99, aliases=("dropout",))
    dora: bool = option(False, "DoRA adds a magnitude vector (d_out) per adapted matrix.", aliases=("use_dora",))
    seq_len: int = option(512, "Tokens per row.", min=1, aliases=("cutoff_len", "max_seq_length"))
    batch_size: int = option(4, "Rows per step.", min=1, aliases=("per_device_train_batch_size",))
    gradient_checkpointing: bool = option(False, "Recompute activations in backward.")
    optimizer: str = option("adamw", "Optimizer.", choices=OPTIMIZERS, aliases=("optim",))
    compute_dtype: str = option("bfloat16", "dtype of activations and 16-bit weights.",
                                choices=DTYPES + tuple(DTYPE_ALIASES))
    device: str = option("cuda", "Where training runs: cuda (allocator bytes) or cpu (process RSS).",
                         choices=("cuda", "cpu"))

    def validate(self) -> None:
        self.compute_dtype = DTYPE_ALIASES.get(self.compute_dtype, self.compute_dtype)
        if not self.targets:
            raise QloraError("targets is empty.", where="plan option 'targets'",
                             hint="Use 'all-linear' or module names such as q_proj,v_proj.")
        self.targets = [str(t) for t in self.targets]
        if self.gpu is not None:
            parse_memory(self.gpu)  # refuse "0GB", "-3", "lots" here, naming the option
        if self.method == "full" and self.bits not in (None, 16):
            raise QloraError(f"full fine-tuning trains 16-bit weights, not a {self.bits}-bit base.",
                             where="plan option 'bits'", hint="Use method: qlora (4-bit) or lora with bits: 8.")
        if self.method == "qlora" and self.bits == 16:
            raise QloraError("qlora means a quantized base; bits 16 is plain lora.", where="plan option 'bits'",
                             hint="Use method: lora, or bits: 4/8.")

    @property
    def base_bits(self) -> int:
        if self.bits is not None:
            return self.bits
        return 4 if self.method == "qlora" else 16
