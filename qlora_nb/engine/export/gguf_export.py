"""``merge(DIR, format="gguf" | "ollama")``: the merged model as one verified GGUF file (plus an Ollama Modelfile).

``base_only=True`` writes the base alone, exactly as the session holds it (every
quantized linear dequantized, so NF4 -> the outtype), no adapter merged: the
base a GGUF LoRA (``save(DIR, format="gguf")``) was trained against. Converting
the original 16-bit checkpoint instead gives a slightly different base (the
quantization error the adapter learned around). It needs no trained adapter.

Refusals come before any work (no trained adapter, unsupported architecture or
tokenizer, an output type gguf-py cannot write, a folder holding user files, too
little disk for the expected size). The folder is built under a temporary name
and swapped in only after the file was written *and* verified, so an interrupt
or a failed check leaves no ``.gguf`` under the final name.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import QloraError
from ...units import human_bytes
from ..model.adapters import is_trained, no_adapter
from .gguf_write import DEFAULT_OUTTYPE, normalize_outtype

if TYPE_CHECKING:
    from ..session import Session

FORMATS = ("hf", "gguf", "ollama")
_METADATA_SLACK = 1.1  # tokenizer arrays, tensor table and alignment on top of the tensor bytes


@dataclass
class GGUFResult:
    """What a GGUF export wrote and how the re-loaded file compares with the adapted session."""

    directory: Path
    file: Path
    outtype: str
    adapter: str
    size_bytes: int = 0
    expected_bytes: int = 0
    seconds: float = 0.0
    verified: bool = False
    max_abs_diff: float | None = None
    logit_scale: float | None = None
    adapter_effect: float | None = None
    top1_agreement: float | None = None
    tokens_match: bool | None = None
    template_match: bool | None = None
    eos_match: bool | None = None
    modelfile: Path | None = None
    base_only: bool = False
    probes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("directory", "file", "modelfile"):
            d[key] = None if d[key] is None else str(d[key])
        return d

    def verdict(self) -> str:
        from .gguf_check import verdict_figures

        if not self.verified:
            return f"GGUF NOT verified (--no-verify): {self.file.name} was not loaded back"
        return f"GGUF verified: {self.file.name} ({self.outtype}) {verdict_figures(self)}"

    def written(self) -> str:
        size = f"({human_bytes(self.size_bytes, floor='MiB')}) in {self.seconds:.1f} s"
        if self.base_only:
            return (f"wrote the session's base as it holds it (quantized linears dequantized to {self.outtype}, no "
                    f"adapter) as {self.file} {size}; run a GGUF LoRA on it: llama-cli -m {self.file} --lora "
                    "ADAPTER-lora.gguf (from %qlora_save DIR --format gguf)")
        return (f"wrote adapter {self.adapter!r} merged into the base as {self.file} {size}; llama.cpp: "
                f"llama-cli -m {self.file}")

    def ollama_commands(self, name: str | None = None) -> list[str]:
        name = name or re.sub(r"[^a-z0-9_.-]", "-", self.file.stem.lower())
        return [f"ollama create {name} -f {self.modelfile}", f"ollama run {name}"]

    def __str__(self) -> str:
        lines = [self.verdict(), self.written()]
        if self.modelfile is not None:
            lines.append(f"Ollama: {self.modelfile} written; run:")
            lines += [f"  {cmd}" for cmd in self.ollama_commands()]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(str(self))


def normalize_format(fmt: str) -> str:
    key = str(fmt).strip().lower()
    if key not in FORMATS:
        raise QloraError(f"{fmt!r} is not an export format.", where="--format",
                         hint="Accepted: hf (a Hugging Face folder, the default), gguf (one llama.cpp file), "
                              "ollama (the GGUF plus a Modelfile).")
    return key


def file_stem(session: Session, outtype: str, base_only: bool = False) -> str:
    base = Path(str(session.config.model)).name or session.model_path.name
    base = re.sub(r"\.gguf$", "", base, flags=re.I)
    kind = f"base-{outtype}" if base_only else outtype
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', base).strip('-.') or 'model'}-{kind}"


def _base_only_checks(session: Session, adapter: str | None) -> tuple[str, list[str]]:
    """(the name the file is labelled with, warnings) for a base-only export; refuses an adapter name."""
    from ..model.adapters import BASE
    from .gguf_write import quantized_modules

    if adapter is not None:
        raise QloraError(f"base_only writes the base without any adapter, so adapter {adapter!r} would be ignored.",
                         where="--base-only", hint="Drop --adapter, or drop --base-only to merge that adapter.")
    warnings = []
    if not quantized_modules(session):
        warnings.append("this session's base is not quantized (bits 16), so the file holds the checkpoint's own "
                        "weights converted to the outtype: the same base llama.cpp's converter would write.")
    return BASE, warnings


def export_gguf(session: Session, directory: str | Path, *, outtype: str = DEFAULT_OUTTYPE, ollama: bool = False,
                overwrite: bool = False, verify: bool = True, adapter: str | None = None,
                probes: list[str] | None = None, verbose: bool = True, disk_free: int | None = None,
                base_only: bool = False) -> GGUFResult:
    """Merge ``adapter`` (default: the active one) into the base and write ``DIR/<model>-<outtype>.gguf``.

    ``base_only``: the base alone, as the session holds it (``DIR/<model>-base-<outtype>.gguf``).
    ``disk_free`` overrides the measured free disk (tests). The session's model
    is only read.
    """
    from ...fileio import atomic_dir
    from ...overwrite import check_target
    from ...quiet import quiet_libraries
    from ..arguments import protected_folders
    from .gguf_arch import arch_of, write_model_metadata
    from .gguf_vocab import tokenizer_fields, write_tokenizer
    from .gguf_write import OUTTYPES, plan_tensors, quantized_modules, tensor_rows, write_gguf
    from .merge import DEFAULT_PROBES

    started = time.perf_counter()
    outtype = normalize_outtype(outtype)
    warnings: list[str] = []
    if base_only:
        name, warnings = _base_only_checks(session, adapter)
    else:
        name = adapter or session.active_adapter
    if not base_only and name not in session.model.peft_config:
        raise no_adapter(name, session.model.peft_config, "--adapter")
    if not base_only and not is_trained(session.model, name):
        raise QloraError(f"adapter {name!r} is untrained (every LoRA B matrix is zero), so the GGUF would only hold "
                         "the base model.", where="merge",
                         hint="Train it first (%%qlora_train), or write the base alone for a GGUF LoRA with "
                              "--base-only (base_only=True).")
    cfg = session.model.peft_config.get(name)
    if getattr(cfg, "use_dora", False):
        raise QloraError(f"adapter {name!r} is a DoRA adapter; the GGUF export merges plain LoRA updates only.",
                         where="--format", hint="Merge to a Hugging Face folder (no --format) and convert that.")
    model_config = session.model.get_base_model().config
    arch = arch_of(model_config)
    vocab = tokenizer_fields(session.tokenizer, int(model_config.vocab_size))
    chat = None
    if ollama:
        from .ollama import modelfile_text

        chat = modelfile_text(session.tokenizer, "PLACEHOLDER.gguf")  # refuses an unknown template family now
    target = check_target(directory, overwrite=overwrite, protected=protected_folders(session))
    planned, ckpt, loras, copies = plan_tensors(session, arch, outtype, name)
    quantized = quantized_modules(session)
    expected = int(sum(p.nbytes for p in planned) * _METADATA_SLACK) + len(vocab["tokens"]) * 64
    probe_dir = target if target.exists() else target.parent
    while not probe_dir.exists() and probe_dir.parent != probe_dir:
        probe_dir = probe_dir.parent
    free = disk_free if disk_free is not None else shutil.disk_usage(probe_dir).free
    if expected > free:
        raise QloraError(f"the {outtype} GGUF needs about {human_bytes(expected, floor='MiB')} of disk but "
                         f"{probe_dir} has {human_bytes(free, floor='MiB')} free.", where="DIR",
                         hint="Free some space, choose a folder on another disk, or pick a smaller --outtype (q8_0).")
    stem = file_stem(session, outtype, base_only)
    filename = f"{stem}.gguf"
    result = GGUFResult(target, target / filename, outtype, name, expected_bytes=expected, base_only=base_only,
                        probes=list(probes or DEFAULT_PROBES), warnings=warnings)
    ftype = OUTTYPES[outtype][1]

    def metadata(writer) -> None:
        import gguf

        label = "the session's base" if base_only else name
        write_model_metadata(writer, model_config, arch, f"{stem} ({label})")
        writer.add_file_type(int(gguf.LlamaFileType[ftype]))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        if not base_only:
            writer.add_string("general.finetune", name)
        write_tokenizer(writer, vocab)

    with atomic_dir(target, overwrite=overwrite, kind="GGUF export", protected=protected_folders(session)) as tmp, \
            quiet_libraries(("peft", "transformers")):
        result.size_bytes = write_gguf(tmp / filename, planned, metadata, arch,
                                       lambda item: tensor_rows(arch, item, ckpt, loras, copies, name, quantized))
        if chat is not None:
            from .ollama import modelfile_text

            ctx = min(int(getattr(model_config, "max_position_embeddings", 4096) or 4096), 8192)
            (tmp / "Modelfile").write_text(modelfile_text(session.tokenizer, filename, num_ctx=ctx,
                                                          base_only=base_only), encoding="utf-8")
            result.modelfile = target / "Modelfile"
        if verify:
            from .gguf_check import check_gguf

            check_gguf(session, name, tmp, filename, result)
            result.verified = True
        result.seconds = time.perf_counter() - started
    from ..model.quantize import guard_cpu_repack

    guard_cpu_repack(session.model)
    if verbose:
        print(result)
    return result
