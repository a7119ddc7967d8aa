"""Dimensions of popular decoder-only architectures, and the module inventory the planner counts.

The numbers are the public ``config.json`` values of each checkpoint (hidden
size, MLP width, layers, heads, KV heads, head_dim, vocabulary, tied
embeddings). :func:`arch_from_config` reads the same fields from any local or
hub config, so a model missing here is planned from its own config.

:meth:`Arch.linears` lists every ``nn.Linear`` of one decoder layer with its
shape, exactly as transformers builds it (fused ``qkv_proj``/``gate_up_proj``
for Phi-3, q/k/v biases for Qwen2); the planner derives all weight, constant
and LoRA bytes from that list, so the table is the only place dimensions live.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import QloraError, did_you_mean
from ..fileio import path_kind
from ..quiet import hub_offline


@dataclass(frozen=True)
class LinearSpec:
    """One ``nn.Linear`` type per decoder layer (``count`` = how many in the model)."""

    name: str
    d_in: int
    d_out: int
    count: int
    bias: bool = False

    @property
    def numel(self) -> int:
        return self.d_in * self.d_out


@dataclass(frozen=True)
class Arch:
    """What the planner needs to know about a decoder-only transformer."""

    name: str
    hub_id: str
    family: str  # transformers model_type
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool = False  # Qwen2: biases on q/k/v
    fused_qkv: bool = False  # Phi-3: one qkv_proj and one gate_up_proj
    norms_per_layer: int = 2  # Gemma 2/3: four RMSNorms per layer
    qk_norm: bool = False  # Gemma 3 / Qwen3: RMSNorm over head_dim on q and k
    rotary_embeddings: int = 1  # rotary modules, each with inv_freq + original_inv_freq
    scalar_buffers: int = 0  # Gemma: the embedding normalizer sqrt(hidden), a compute-dtype scalar buffer
    context: int | None = None  # max_position_embeddings: longer sequences leave the trained positions
    aliases: tuple[str, ...] = field(default=(), compare=False)

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linears(self) -> list[LinearSpec]:
        """The decoder's linear layers (not ``lm_head``), in transformers' names."""
        h, i, n = self.hidden, self.intermediate, self.layers
        if self.fused_qkv:
            return [
                LinearSpec("qkv_proj", h, self.q_dim + 2 * self.kv_dim, n, self.qkv_bias),
                LinearSpec("o_proj", self.q_dim, h, n),
                LinearSpec("gate_up_proj", h, 2 * i, n),
                LinearSpec("down_proj", i, h, n),
            ]
        return [
            LinearSpec("q_proj", h, self.q_dim, n, self.qkv_bias),
            LinearSpec("k_proj", h, self.kv_dim, n, self.qkv_bias),
            LinearSpec("v_proj", h, self.kv_dim, n, self.qkv_bias),
            LinearSpec("o_proj", self.q_dim, h, n),
            LinearSpec("gate_proj", h, i, n),
            LinearSpec("up_proj", h, i, n),
            LinearSpec("down_proj", i, h, n),
        ]

    def linear_params(self) -> int:
        return sum(s.numel * s.count for s in self.linears())

    def bias_params(self) -> int:
        return sum(s.d_out * s.count for s in self.linears() if s.bias)

    def embedding_params(self) -> int:
        """Input embedding plus, when untied, the ``lm_head``."""
        return self.vocab * self.hidden * (1 if self.tied else 2)

    def norm_params(self) -> int:
        per_layer = self.norms_per_layer * self.hidden + (2 * self.head_dim if self.qk_norm else 0)
        return self.layers * per_layer + self.hidden

    def rotary_buffer_numel(self) -> int:
        """fp32 ``inv_freq`` + ``original_inv_freq`` (head_dim/2 each) per rotary embedding."""
        return self.rotary_embeddings * 2 * (self.head_dim // 2)

    def total_params(self) -> int:
        return self.linear_params() + self.bias_params() + self.embedding_params() + self.norm_params()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("aliases")
        d["params"] = self.total_params()
        return d


def _a(name, hub, family, h, i, n, heads, kv, hd, vocab, tied, aliases=(), **kw) -> Arch:
    return Arch(name, hub, family, h, i, n, heads, kv, hd, vocab, tied, aliases=tuple(aliases), **kw)


_GEMMA2 = dict(norms_per_layer=4, scalar_buffers=1)
_GEMMA3 = dict(norms_per_layer=4, qk_norm=True, scalar_buffers=1)
_QWEN2 = dict(qkv_bias=True)
_PHI3 = dict(fused_qkv=True)

# name, hub id, model_type, hidden, intermediate, layers, heads, kv heads, head_dim, vocab, tied
ARCHITECTURES: dict[str, Arch] = {a.name: a for a in [
    _a("llama-7b", "huggyllama/llama-7b", "llama", 4096, 11008, 32, 32, 32, 128, 32000, False, ["llama-1-7b"]),
    _a("llama-13b", "huggyllama/llama-13b", "llama", 5120, 13824, 40, 40, 40, 128, 32000, False, ["llama-1-13b"]),
    _a("llama-33b", "huggyllama/llama-30b", "llama", 6656, 17920, 60, 52, 52, 128, 32000, False,
       ["llama-30b", "llama-1-33b"]),
    _a("llama-65b", "huggyllama/llama-65b", "llama", 8192, 22016, 80, 64, 64, 128, 32000, False, ["llama-1-65b"]),
    _a("llama-2-7b", "meta-llama/Llama-2-7b-hf", "llama", 4096, 11008, 32, 32, 32, 128, 32000, False),
    _a("llama-2-13b", "meta-llama/Llama-2-13b-hf", "llama", 5120, 13824, 40, 40, 40, 128, 32000, False),
    _a("llama-2-70b", "meta-llama/Llama-2-70b-hf", "llama", 8192, 28672, 80, 64, 8, 128, 32000, False),
    _a("llama-3-8b", "meta-llama/Meta-Llama-3-8B", "llama", 4096, 14336, 32, 32, 8, 128, 128256, False,
       ["llama-3-8b-instruct"]),
    _a("llama-3.1-8b", "meta-llama/Llama-3.1-8B", "llama", 4096, 14336, 32, 32, 8, 128, 128256, False,
       ["llama-3.1-8b-instruct"]),
    _a("llama-3-70b", "meta-llama/Meta-Llama-3-70B", "llama", 8192, 28672, 80, 64, 8, 128, 128256, False,
       ["llama-3-70b-instruct"]),
    _a("llama-3.1-70b", "meta-llama/Llama-3.1-70B", "llama", 8192, 28672, 80, 64, 8, 128, 128256, False,
       ["llama-3.3-70b", "llama-3.3-70b-instruct"]),
    _a("llama-3.2-1b", "meta-llama/Llama-3.2-1B", "llama", 2048, 8192, 16, 32, 8, 64, 128256, True,
       ["llama-3.2-1b-instruct"]),
    _a("llama-3.2-3b", "meta-llama/Llama-3.2-3B", "llama", 3072, 8192, 28, 24, 8, 128, 128256, True,
       ["llama-3.2-3b-instruct"]),
    _a("mistral-7b", "mistralai/Mistral-7B-v0.1", "mistral", 4096, 14336, 32, 32, 8, 128, 32000, False,
       ["mistral-7b-v0.1", "mistral-7b-instruct"]),
    _a("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B", "qwen2", 896, 4864, 24, 14, 2, 64, 151936, True, **_QWEN2),
    _a("qwen2.5-1.5b", "Qwen/Qwen2.5-1.5B", "qwen2", 1536, 8960, 28, 12, 2, 128, 151936, True, **_QWEN2),
    _a("qwen2.5-3b", "Qwen/Qwen2.5-3B", "qwen2", 2048, 11008, 36, 16, 2, 128, 151936, True, **_QWEN2),
    _a("qwen2.5-7b", "Qwen/Qwen2.5-7B", "qwen2", 3584, 18944, 28, 28, 4, 128, 152064, False, **_QWEN2),
    _a("qwen2.5-14b", "Qwen/Qwen2.5-14B", "qwen2", 5120, 13824, 48, 40, 8, 128, 152064, False, **_QWEN2),
    _a("qwen2.5-32b", "Qwen/Qwen2.5-32B", "qwen2", 5120, 27648, 64, 40, 8, 128, 152064, False, **_QWEN2),
    _a("qwen2.5-72b", "Qwen/Qwen2.5-72B", "qwen2", 8192, 29568, 80, 64, 8, 128, 152064, False, **_QWEN2),
    _a("gemma-2-2b", "google/gemma-2-2b", "gemma2", 2304, 9216, 26, 8, 4, 256, 256000, True, **_GEMMA2),
    _a("gemma-2-9b", "google/gemma-2-9b", "gemma2", 3584, 14336, 42, 16, 8, 256, 256000, True, **_GEMMA2),
    _a("gemma-2-27b", "google/gemma-2-27b", "gemma2", 4608, 36864, 46, 32, 16, 128, 256000, True, **_GEMMA2),
    _a("gemma-3-1b", "google/gemma-3-1b-pt", "gemma3_text", 1152, 6912, 26, 4, 1, 256, 262144, True, **_GEMMA3),
    _a("gemma-3-4b", "google/gemma-3-4b-pt", "gemma3_text", 2560, 10240, 34, 8, 4, 256, 262208, True, **_GEMMA3),
    _a("gemma-3-12b", "google/gemma-3-12b-pt", "gemma3_text", 3840, 15360, 48, 16, 8, 256, 262208, True,
       **_GEMMA3),
    _a("gemma-3-27b", "google/gemma-3-27b-pt", "gemma3_text", 5376, 21504, 62, 32, 16, 128, 262208, True,
       **_GEMMA3),
    _a("phi-3-mini", "microsoft/Phi-3-mini-4k-instruct", "phi3", 3072, 8192, 32, 32, 32, 96, 32064, False,
       ["phi-3-mini-4k"], **_PHI3),
    _a("phi-3-mini-128k", "microsoft/Phi-3-mini-128k-instruct", "phi3", 3072, 8192, 32, 32, 32, 96, 32064, False,
       **_PHI3),
    _a("phi-3-medium", "microsoft/Phi-3-medium-4k-instruct", "phi3", 5120, 17920, 40, 40, 10, 128, 32064, False,
       ["phi-3-medium-4k"], **_PHI3),
    _a("phi-3-medium-128k", "microsoft/Phi-3-medium-128k-instruct", "phi3", 5120, 17920, 40, 40, 10, 128, 32064,
       False, **_PHI3),
    _a("smollm2-135m", "HuggingFaceTB/SmolLM2-135M", "llama", 576, 1536, 30, 9, 3, 64, 49152, True,
       ["smollm2-135m-instruct"]),
    _a("smollm2-360m", "HuggingFaceTB/SmolLM2-360M", "llama", 960, 2560, 32, 15, 5, 64, 49152, True,
       ["smollm2-360m-instruct"]),
    _a("smollm2-1.7b", "HuggingFaceTB/SmolLM2-1.7B", "llama", 2048, 8192, 24, 32, 32, 64, 49152, True,
       ["smollm2-1.7b-instruct"]),
]}

# max_position_embeddings of each checkpoint's config.json, kept apart from the dimensions so that every value
# can be traced: only values read from the checkpoint's (or an unmodified derivative's) config.json are listed;
# a model missing here has context None, and the planner then does not warn about seq_len.
CONTEXT = {
    "llama-7b": 2048, "llama-13b": 2048, "llama-33b": 2048, "llama-65b": 2048,
    "llama-2-7b": 4096, "llama-2-13b": 4096, "llama-2-70b": 4096,
    "llama-3-8b": 8192, "llama-3-70b": 8192,
    "llama-3.1-8b": 131072, "llama-3.1-70b": 131072, "llama-3.2-1b": 131072, "llama-3.2-3b": 131072,
    "mistral-7b": 32768,  # v0.1 also attends through a 4096-token sliding window
    "qwen2.5-0.5b": 32768, "qwen2.5-7b": 131072,
    "gemma-2-2b": 8192, "gemma-2-9b": 8192, "gemma-2-27b": 8192,
    "gemma-3-1b": 32768, "gemma-3-4b": 131072, "gemma-3-12b": 131072, "gemma-3-27b": 131072,
    "phi-3-mini": 4096, "phi-3-mini-128k": 131072, "phi-3-medium": 4096, "phi-3-medium-128k": 131072,
    "smollm2-135m": 8192,
}
ARCHITECTURES = {k: replace(a, context=CONTEXT.get(k)) for k, a in ARCHITECTURES.items()}

_SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text", "phi3", "olmo",
              "olmo2", "granite", "smollm3")


def _index() -> dict[str, Arch]:
    out: dict[str, Arch] = {}
    for a in ARCHITECTURES.values():
        for key in (a.name, a.hub_id.lower(), a.hub_id.split("/")[-1].lower(), *a.aliases):
            out.setdefault(key.lower(), a)
    return out


def lookup(name: str) -> Arch | None:
    """The table entry for a name, alias or hub id (case-insensitive), or None."""
    return _index().get(name.strip().lower())


def unknown_model_error(name: str) -> QloraError:
    return QloraError(f"unknown model {name!r}: not in the architectures table, not a local config.json or "
                      "model folder, and not a reachable hub id.", where="MODEL",
                      hint=did_you_mean(name.lower(), sorted(ARCHITECTURES)))


def _dim(cfg: dict[str, Any], key: str, source: str, default: Any = None) -> int:
    """A positive whole-number field of a config (``default`` when absent or null), or an error naming file and key."""
    value = cfg.get(key)
    if value is None:
        if default is not None:
            return default
        raise QloraError(f"{source} has no {key!r}; the planner needs hidden_size, intermediate_size, "
                         "num_hidden_layers, num_attention_heads and vocab_size.", where="MODEL",
                         hint="Pass the config.json of a decoder-only transformers model, or a name from the table.")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
        raise QloraError(f"{source}: {key} is {value!r}, not a positive whole number.", where="MODEL",
                         hint=f"Fix {key} in the file (e.g. {key}: 576), or pass a name from the table.")
    return int(value)


def arch_from_config(cfg: dict[str, Any], name: str = "config", source: str | None = None) -> Arch:
    """An :class:`Arch` from a transformers ``config.json`` dict (multimodal: its ``text_config``).

    ``source`` names the file in errors (default: the model name).
    """
    source = source or f"the config of {name!r}"
    if "text_config" in cfg and "hidden_size" not in cfg:
        if not isinstance(cfg["text_config"], dict):
            raise QloraError(f"{source}: text_config is a {type(cfg['text_config']).__name__}, not a mapping.",
                             where="MODEL", hint="Pass a transformers config.json.")
        cfg = {**cfg["text_config"], "tie_word_embeddings": cfg.get("tie_word_embeddings",
                                                                     cfg["text_config"].get("tie_word_embeddings"))}
    family = str(cfg.get("model_type", "llama"))
    if family == "gemma3":
        family = "gemma3_text"
    h = _dim(cfg, "hidden_size", source)
    heads = _dim(cfg, "num_attention_heads", source)
    arch = Arch(
        name=name,
        hub_id=str(cfg.get("_name_or_path") or name),
        family=family,
        hidden=h,
        intermediate=_dim(cfg, "intermediate_size", source),
        layers=_dim(cfg, "num_hidden_layers", source),
        heads=heads,
        kv_heads=_dim(cfg, "num_key_value_heads", source, heads),
        head_dim=_dim(cfg, "head_dim", source, max(h // heads, 1)),
        vocab=_dim(cfg, "vocab_size", source),
        tied=bool(cfg.get("tie_word_embeddings", family.startswith("gemma"))),
        qkv_bias=family == "qwen2" or bool(cfg.get("attention_bias", False)),
        fused_qkv=family == "phi3",
        norms_per_layer=4 if family in ("gemma2", "gemma3_text") else 2,
        qk_norm=family in ("gemma3_text", "qwen3"),
        scalar_buffers=1 if family.startswith("gemma") else 0,
        context=_context_of(cfg),
    )
    if family not in _SUPPORTED:
        raise QloraError(f"model_type {family!r} is not a supported decoder layout for the planner.", where="MODEL",
                         hint=f"Supported: {', '.join(_SUPPORTED)}.")
    return arch


def _context_of(cfg: dict[str, Any]) -> int | None:
    """max_position_embeddings (older configs: max_sequence_length / n_positions), or None when absent or odd."""
    for key in ("max_position_embeddings", "max_sequence_length", "n_positions"):
        value = cfg.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def read_config(path: Path) -> dict[str, Any]:
    """A config.json as a dict, or a QloraError that names the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise QloraError(f"cannot read {path} ({exc.strerror or exc}).", where="MODEL",
                         hint="Pass a readable config.json or model folder.") from None
    except json.JSONDecodeError as exc:
        raise QloraError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}).",
                         where="MODEL", hint="Pass a transformers config.json.") from None
    except UnicodeDecodeError as exc:
        raise QloraError(f"{path} is not UTF-8 text (byte {exc.start}).", where="MODEL",
                         hint="Pass a transformers config.json.") from None
    if not isinstance(data, dict):
        raise QloraError(f"{path} holds a {type(data).__name__}, not a config mapping.", where="MODEL")
    return data


def resolve_arch(model: str) -> tuple[Arch, str]:
    """(Arch, where it came from) for a table name, a config.json/model folder, or a hub id (config only)."""
    name = str(model).strip()
    if not name:
        raise QloraError("no model given.", where="MODEL", hint="Name a model, e.g. llama-2-7b.")
    path = Path(os.path.expanduser(name))
    kind = path_kind(path)
    if kind not in ("missing", "a folder", None):  # a FIFO would block the read; a link loop is not "unknown"
        raise QloraError(f"{name!r} is {kind}, not a config.json or model folder.", where="MODEL",
                         hint="Pass a model folder with config.json, or the config.json itself.")
    if kind != "missing":
        cfg_path = path / "config.json" if path.is_dir() else path
        if path_kind(cfg_path) is not None:
            raise QloraError(f"the folder {str(path)!r} has no config.json file.", where="MODEL",
                             hint="Pass a model folder with config.json, or the config.json itself.")
        return arch_from_config(read_config(cfg_path), name=path.name if path.is_dir() else path.parent.name,
                                source=str(cfg_path)), str(cfg_path)
    found = lookup(name)
    if found is not None:
        return found, "architectures table"
    if name.startswith((".", "/", "~")) or name.endswith(".json"):
        raise QloraError(f"path {name!r} does not exist.", where="MODEL", hint="Check the path.")
    if name.count("/") == 1:
        cfg = _hub_config(name)
        if cfg is not None:
            return arch_from_config(read_config(cfg), name=name), f"hub config {name}"
        err = unknown_model_error(name.split("/")[-1])
        err.message = f"{name!r} is not in the architectures table and its config could not be fetched from the hub."
        raise QloraError(err.message, where="MODEL", hint=err.hint)
    raise unknown_model_error(name)


def _hub_config(repo_id: str) -> Path | None:
    """Only config.json, never weights; None when offline or missing."""
    if hub_offline():
        return None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id, "config.json", etag_timeout=5))
    except Exception:
        return None
