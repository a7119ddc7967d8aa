"""``save(DIR, format="gguf")``: the adapter alone as a GGUF LoRA, what llama.cpp's ``--lora`` and Ollama's ``ADAPTER`` read.

The file holds ``general.type = adapter``, ``adapter.type = lora`` and
``adapter.lora.alpha``, and for every adapted matrix ``<llama.cpp name>.lora_a``
(A, r x in) and ``.lora_b`` (B, out x r) in F32. llama.cpp scales by alpha/r with
r read from the tensors, so the alpha written is the session's effective scale
times r (rsLoRA's alpha/sqrt(r) included). For Llama-family q/k the rows of B
get the same rotary permutation as the merged weight (permuting rows of B@A is
permuting rows of B). llama.cpp cannot apply LoRA to the embeddings or the output
head, nor hold fully trained modules, so such adapters are refused with the
advice to merge instead. After writing, the file is read back with
``gguf.GGUFReader`` and every tensor is compared with the adapter's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import QloraError
from ..model.adapters import is_trained, no_adapter

if TYPE_CHECKING:
    from ..session import Session

_NO_LORA = ("embed_tokens", "lm_head")


def _refuse_untransferable(session: Session, name: str, loras: dict, copies: dict) -> None:
    bad = sorted({p.rsplit(".", 1)[-1] for p in [*loras, *copies] if p.rsplit(".", 1)[-1] in _NO_LORA})
    if bad or copies:
        what = ", ".join(bad) if bad else ", ".join(sorted(copies))
        raise QloraError(f"adapter {name!r} trains {what}, which a GGUF LoRA cannot hold (llama.cpp applies LoRA "
                         "only to the transformer blocks' linear layers).", where="--format gguf",
                         hint="Merge instead: %qlora_merge DIR --format gguf (session.merge(DIR, format='gguf')) "
                              "writes one file with the adapter merged in.")


def _effective_alpha(loras: dict, name: str) -> float:
    """alpha such that llama.cpp's alpha / r equals peft's scaling for every module (one value per file)."""
    alphas = {round(float(m.scaling[name]) * m.r[name], 9) for m in loras.values()}
    if len(alphas) != 1:
        raise QloraError(f"adapter {name!r} scales its modules differently ({sorted(alphas)[:4]} as alpha); a GGUF "
                         "LoRA holds one alpha for all tensors.", where="--format gguf",
                         hint="Merge instead: %qlora_merge DIR --format gguf.")
    return alphas.pop()


def save_gguf_lora(session: Session, directory: str | Path, *, overwrite: bool = False,
                   adapter: str | None = None) -> Path:
    """Write ``DIR/<adapter>-lora.gguf``; returns the folder. Read back and compared before the folder is kept."""
    import gguf
    import numpy as np

    from ...fileio import atomic_dir
    from ..arguments import protected_folders
    from .gguf_arch import arch_of, gguf_name, name_map, row_order
    from .gguf_write import _lora_modules, _trained_copies

    name = adapter or session.active_adapter
    if name not in session.model.peft_config:
        raise no_adapter(name, session.model.peft_config, "--adapter")
    if not is_trained(session.model, name):
        raise QloraError(f"adapter {name!r} is untrained (every LoRA B matrix is zero); its GGUF would change nothing.",
                         where="save", hint="Train it first (%%qlora_train).")
    cfg = session.model.peft_config[name]
    if getattr(cfg, "use_dora", False):
        raise QloraError(f"adapter {name!r} is a DoRA adapter, which llama.cpp's LoRA loader cannot apply.",
                         where="--format gguf", hint="Merge instead: %qlora_merge DIR --format gguf.")
    model_config = session.model.get_base_model().config
    arch = arch_of(model_config)
    loras, copies = _lora_modules(session, name), _trained_copies(session, name)
    _refuse_untransferable(session, name, loras, copies)
    alpha = _effective_alpha(loras, name)
    names = name_map(arch)
    tensors: dict[str, np.ndarray] = {}
    for path, module in loras.items():
        target = gguf_name(names, f"{path}.weight")
        if target is None:
            raise QloraError(f"adapted module {path!r} has no llama.cpp name for {arch.gguf_arch}.",
                             where="--format gguf", hint="Merge instead: %qlora_merge DIR --format gguf.")
        a = module.lora_A[name].weight.detach().float().cpu().numpy()
        b = module.lora_B[name].weight.detach().float().cpu().numpy()
        order = row_order(arch, f"{path}.weight", b.shape[0])
        tensors[f"{target}.lora_a"] = np.ascontiguousarray(a)
        tensors[f"{target}.lora_b"] = np.ascontiguousarray(b if order is None else b[order])
    fp = session.base_fingerprint or {}
    base_name = str(fp.get("name_or_path") or session.config.model)
    filename = f"{name}-lora.gguf"
    target_dir = Path(directory).expanduser()
    with atomic_dir(target_dir, overwrite=overwrite, kind="GGUF LoRA", protected=protected_folders(session)) as tmp:
        writer = gguf.GGUFWriter(str(tmp / filename), arch.gguf_arch)
        try:
            writer.add_type(gguf.GGUFType.ADAPTER)
            writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
            writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
            writer.add_name(f"{Path(base_name).name} LoRA {name}")
            writer.add_base_model_count(1)
            writer.add_base_model_name(0, base_name)
            writer.add_string("qlora_nb.base_model", base_name)
            writer.add_uint32(f"{arch.gguf_arch}.block_count", arch.n_layers)
            for key, value in tensors.items():
                writer.add_tensor(key, value)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
        check_gguf_lora(tmp / filename, tensors, alpha)
    session.adapters.setdefault(name, {})["saved_gguf_to"] = str(target_dir / filename)
    return target_dir


def check_gguf_lora(path: Path, expected: dict, alpha: float) -> None:
    """Read the file with GGUFReader: type keys, alpha and every tensor equal to what was meant."""
    import numpy as np
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    got = {t.name: np.asarray(t.data) for t in reader.tensors}
    problems = []
    if fields.get("general.type") != "adapter" or fields.get("adapter.type") != "lora":
        problems.append("the adapter type keys are missing")
    if abs(float(fields.get("adapter.lora.alpha", float("nan"))) - alpha) > 1e-4 * max(1.0, abs(alpha)):
        problems.append(f"adapter.lora.alpha reads {fields.get('adapter.lora.alpha')}, not {alpha}")
    if set(got) != set(expected):
        problems.append(f"tensor names differ ({sorted(set(got) ^ set(expected))[:4]})")
    else:
        bad = [k for k, v in expected.items() if got[k].shape != v.shape or not np.array_equal(got[k], v)]
        if bad:
            problems.append(f"{len(bad)} tensors read back different ({bad[:3]})")
    if problems:
        raise QloraError(f"{path.name}: " + "; ".join(problems) + ".", where="GGUF LoRA verification FAILED",
                         hint="Nothing was kept. Rerun with --debug and report it.")


def lora_summary(folder: Path, adapter: str, seconds: float | None = None) -> str:
    from ...units import human_bytes

    files = sorted(Path(folder).glob("*.gguf"))
    f = files[0] if files else Path(folder)
    size = f.stat().st_size if f.is_file() else 0
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    return (f"saved adapter {adapter!r} as a GGUF LoRA {f} ({human_bytes(size, floor='MiB')}){took}, read back with "
            f"gguf.GGUFReader ✓; use it with `llama-cli -m BASE.gguf --lora {f}` or `ADAPTER ./{f.name}` in an "
            "Ollama Modelfile, where BASE.gguf is the base as this session holds it (NF4 dequantized, what the "
            "adapter was trained on): write it with `%qlora_merge BASEDIR --format gguf --base-only` "
            "(session.merge(BASEDIR, format='gguf', base_only=True)), or --format ollama --base-only for a "
            "Modelfile FROM it")

