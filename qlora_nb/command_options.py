"""The options of the commands that act on a loaded session: save, merge, export, launch, the playground, the
quant report.

Split from :mod:`qlora_nb.config` (load, train, generate and plan) only for size; the same rule holds here:
one declaration per option, from which the magics' flags, ``%magic?`` help and the error messages come.
Concepts shared with load/train/plan (``overwrite``, ``cpu_offload``, the GGUF column) are declared once in
:mod:`qlora_nb.config` and used here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .config import CPU_OFFLOAD, DTYPE_ALIASES, DTYPES, GGUF_COLUMN, GGUF_ENGINE, OVERWRITE, _check_engine, _dtype
from .errors import QloraError
from .options import Concept, OptionsBase, option

ADAPTER = Concept("adapter", None, "Adapter to use (default: the active one).")


@dataclass
class SaveOptions(OptionsBase):
    """``%qlora_save`` / ``Session.save``: write an adapter as a standard PEFT folder."""

    _kind: ClassVar[str] = "save option"
    _flag_in_where: ClassVar[bool] = True

    overwrite: bool = OVERWRITE()
    adapter: str | None = ADAPTER()
    format: str = option("peft", "peft (a PEFT folder) or gguf (one GGUF LoRA file for llama.cpp --lora and "
                         "Ollama's ADAPTER).", choices=("peft", "gguf"))


@dataclass
class MergeOptions(OptionsBase):
    """``%qlora_merge`` / ``Session.merge``: a verified 16/32-bit merged copy of the base."""

    _kind: ClassVar[str] = "merge option"
    _flag_in_where: ClassVar[bool] = True

    dtype: str = option("bfloat16", "dtype of the merged weights; float32 is exact.",
                        choices=DTYPES + tuple(DTYPE_ALIASES))
    overwrite: bool = OVERWRITE()
    verify: bool = option(True, "Reload the merged folder and compare its weights and logits with the session.")
    adapter: str | None = ADAPTER()
    format: str = option("hf", "hf (a Hugging Face folder), gguf (one llama.cpp file) or ollama (the GGUF plus a "
                         "Modelfile with the chat TEMPLATE and stop tokens).", choices=("hf", "gguf", "ollama"))
    # No choices: the engine's check (gguf_write.normalize_outtype) names the K-quants and how to make them.
    outtype: str | None = option(None, "GGUF type: q8_0 (default, the smallest written without llama.cpp), f16, "
                                 "bf16 or f32. K-quants (Q4_K_M, ...) need llama-quantize: export f16, then "
                                 "`llama-quantize IN-f16.gguf OUT-Q4_K_M.gguf Q4_K_M`, or `ollama create NAME "
                                 "--quantize q4_K_M -f DIR/Modelfile`.")
    base_only: bool = option(False, "GGUF only: write the base exactly as this session holds it (NF4 dequantized "
                             "to the outtype), no adapter merged: the base a GGUF LoRA (%qlora_save DIR --format "
                             "gguf) was trained on; needs no trained adapter.")

    def validate(self) -> None:
        self.dtype = _dtype(self.dtype)
        if self.outtype is not None and self.format == "hf":
            raise QloraError("outtype applies to GGUF exports only.", where=self.where("outtype"),
                             hint="Add format gguf (--format gguf) or ollama, or use dtype for a Hugging Face merge.")


@dataclass
class PlaygroundOptions(OptionsBase):
    """``%qlora_playground`` / ``qlora_nb.playground``: chat with the base and each adapter side by side."""

    _kind: ClassVar[str] = "playground option"
    _flag_in_where: ClassVar[bool] = True

    history: str = option("same", "Chat: every column continues from the first column's answers (same, an A/B on "
                          "identical context) or from its own (own).", choices=("same", "own"))
    gguf: str | None = GGUF_COLUMN()
    engine: str = GGUF_ENGINE()

    def validate(self) -> None:
        _check_engine(self.engine, self.gguf, self.where("engine"))


@dataclass
class LaunchOptions(OptionsBase):
    """``%qlora_launch`` / ``Session.launch``: the session's run on N processes through ``accelerate launch``."""

    _kind: ClassVar[str] = "launch option"
    _flag_in_where: ClassVar[bool] = True

    processes: int = option(2, "Ranks to start, one per GPU (on the CPU: per core).", min=1)
    fsdp: bool = option(False, "Shard the model (FSDP) instead of replicating it (DDP).")
    cpu_offload: bool = CPU_OFFLOAD()
    port: int | None = option(None, "Rendezvous port (default: a free one).", min=1, max=65535)
    directory: str | None = option(None, "Job folder (default: runs/launch-<time>).")
    overwrite: bool = OVERWRITE()


@dataclass
class ExportOptions(OptionsBase):
    """``%qlora_export`` / ``Session.export``: a standalone train.py and configs for ``accelerate launch``."""

    _kind: ClassVar[str] = "export option"
    _flag_in_where: ClassVar[bool] = True

    overwrite: bool = OVERWRITE()
    num_processes: int = option(2, "Processes (GPUs) per machine written into the accelerate config.", min=1)
    fsdp: bool = option(False, "Make the FSDP-QLoRA config the default in the README.")
    data: str | None = option(None, "Data file for the script (default: the last run's data file).")


@dataclass
class QuantReportOptions(OptionsBase):
    """``%qlora_quant_report`` / ``Session.quant_report``: what 4-bit storage costs in error and perplexity."""

    _kind: ClassVar[str] = "quant report option"
    _flag_in_where: ClassVar[bool] = True

    sample: int | None = option(65536, "Values per weight to quantize (whole rows of blocks of 64); 'all' for "
                                       "every value (slow on CPU).", min=64, words={"all": None})
    max_tokens: int = option(512, "Held-out tokens for the 4-bit vs 16-bit perplexity.", min=2)
    perplexity: bool = option(True, "Measure the 4-bit vs 16-bit perplexity (loads a temporary 16-bit copy).",
                              aliases=("perplexity_check",))
