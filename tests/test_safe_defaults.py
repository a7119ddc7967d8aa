"""Safe defaults: safetensors only, no remote code, writes only to the output dir and the cache, reproducible runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import qlora_nb
from qlora_nb.errors import QloraError

ROOT = Path(__file__).resolve().parents[1]


def _rows(n=12):
    return [{"prompt": f"Echo {i}: ", "completion": f"{i} {i}"} for i in range(n)]


# ------------------------------------------------------------------ pickles
@pytest.fixture(scope="module")
def bin_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model re-saved as pytorch_model.bin only (a pickle)."""
    import torch
    from safetensors.torch import load_file

    out = tmp_path_factory.mktemp("bin-model")
    for f in tiny_model_dir.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, out / f.name)
    state = load_file(str(tiny_model_dir / "model.safetensors"))
    torch.save(state, out / "pytorch_model.bin")
    return out


def test_pickle_weights_are_refused_unless_opted_in(bin_model_dir, monkeypatch):
    import torch

    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a) or real_load(*a, **k))
    with pytest.raises(QloraError) as info:
        qlora_nb.load(str(bin_model_dir))
    text = str(info.value)
    assert "no .safetensors weights" in text and "allow_pickle" in text and str(bin_model_dir) in text
    assert calls == []  # refused before anything was unpickled
    s = qlora_nb.load(str(bin_model_dir), allow_pickle=True, r=4)
    assert calls and s.params["trainable"] > 0


def test_load_train_save_reload_never_unpickle(tiny_model_dir, tmp_path, monkeypatch):
    """The default path reads and writes safetensors only: torch.load is never called."""
    import torch

    def refuse(*a, **k):
        raise AssertionError(f"torch.load called: {a}")

    monkeypatch.setattr(torch, "load", refuse)
    s = qlora_nb.load(str(tiny_model_dir), r=4)
    s.train(data=_rows(), max_steps=1, batch_size=4, val_split=0, output_dir=str(tmp_path / "run"), cutoff_len=32)
    saved = s.save(tmp_path / "saved")
    assert sorted(p.name for p in saved.iterdir() if p.suffix in (".bin", ".safetensors", ".pt", ".pth")) == \
        ["adapter_model.safetensors"]
    assert not list((tmp_path / "run").rglob("*.bin"))
    s.load_adapter(saved, name="again")
    assert "again" in s.adapters


def test_pickle_adapter_is_refused_unless_opted_in(tiny_session, tmp_path):
    import torch
    from safetensors.torch import load_file

    saved = tiny_session.save(tmp_path / "a")
    torch.save(load_file(str(saved / "adapter_model.safetensors")), saved / "adapter_model.bin")
    (saved / "adapter_model.safetensors").unlink()
    with pytest.raises(QloraError, match="pickle") as info:
        tiny_session.load_adapter(saved, name="p")
    assert "allow" in str(info.value).lower()
    assert tiny_session.load_adapter(saved, name="p", allow_pickle=True) == "p"


# --------------------------------------------------------------- remote code
@pytest.fixture
def remote_code_dir(tiny_model_dir, tmp_path):
    """A model folder whose config asks for its own Python code, which would leave a marker if it ever ran."""
    d = tmp_path / "remote"
    shutil.copytree(tiny_model_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(model_type="evil_llama", architectures=["EvilForCausalLM"],
               auto_map={"AutoConfig": "modeling_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilModel"})
    (d / "config.json").write_text(json.dumps(cfg))
    marker = tmp_path / "REMOTE_CODE_RAN"
    (d / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n"
                                        "from transformers import LlamaConfig as EvilConfig\n"
                                        "from transformers import LlamaForCausalLM as EvilModel\n")
    return d, marker


def test_trust_remote_code_is_off_by_default(remote_code_dir):
    d, marker = remote_code_dir
    with pytest.raises(QloraError) as info:
        qlora_nb.load(str(d))
    assert "trust_remote_code" in str(info.value) or "trust" in str(info.value)
    assert not marker.exists()


def test_trust_remote_code_is_passed_through_only_when_asked(tiny_model_dir, monkeypatch):
    import transformers

    seen = []
    for cls in (transformers.AutoConfig, transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        real = cls.from_pretrained.__func__

        def record(klass, *a, _real=real, **k):
            seen.append((klass.__name__, k.get("trust_remote_code", False)))
            return _real(klass, *a, **k)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(record))
    qlora_nb.load(str(tiny_model_dir), r=4)
    assert seen and all(flag is False for _, flag in seen), seen
    assert {"AutoConfig", "AutoModelForCausalLM"} <= {n for n, _ in seen}
    seen.clear()
    qlora_nb.load(str(tiny_model_dir), r=4, trust_remote_code=True)
    assert any(flag is True for _, flag in seen)


# ------------------------------------------------------ where files are written
_WRITE_SCRIPT = r"""
import json, sys
import qlora_nb
model, out = sys.argv[1], sys.argv[2]
rows = [{"prompt": f"Echo {i}: ", "completion": f"{i} {i}"} for i in range(8)]
s = qlora_nb.load(model, r=4)
s.train(data=rows, max_steps=2, batch_size=4, val_split=0.25, output_dir=out + "/run", cutoff_len=32, save_steps=1,
        n_probes=1, eval_steps=2)
s.save(out + "/saved")
s.compare(["Echo 3: "], max_new_tokens=2)
s.plan()
print("ok")
"""


def _all_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_nothing_is_written_outside_the_output_dir_and_the_cache(tiny_model_dir, tmp_path):
    home, cache, cwd, tmpdir, out = (tmp_path / n for n in ("home", "cache", "cwd", "tmp", "out"))
    for d in (home, cwd, tmpdir):
        d.mkdir()
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    model_files = _all_files(model)
    env = {**os.environ, "HOME": str(home), "QLORA_NB_CACHE": str(cache), "TMPDIR": str(tmpdir),
           "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    for var in ("HF_HOME", "XDG_CACHE_HOME", "TRANSFORMERS_CACHE", "HF_DATASETS_CACHE", "MPLCONFIGDIR"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, "-c", _WRITE_SCRIPT, str(model), str(out)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
    assert _all_files(cwd) == set(), "written into the working folder"
    assert _all_files(home) == set(), "written into HOME (outside QLORA_NB_CACHE)"
    assert _all_files(tmpdir) == set(), "temporary files left behind"
    assert _all_files(model) == model_files, "the model folder was changed"
    assert {p.name for p in tmp_path.iterdir()} <= {"home", "cache", "cwd", "tmp", "out", "model"}
    written = _all_files(out)
    assert "saved/adapter_model.safetensors" in written and "run/adapter/adapter_model.safetensors" in written
    assert not [f for f in written if Path(f).name.startswith(".")], "temporary names left in the output dir"


def test_cache_dir_follows_QLORA_NB_CACHE(tmp_path, monkeypatch):
    from qlora_nb.engine.model import models

    monkeypatch.setenv("QLORA_NB_CACHE", str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("QLORA_NB_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert models.cache_dir() == tmp_path / "h" / ".cache" / "qlora_nb"


def test_alias_resolves_inside_the_configured_cache(tmp_path, monkeypatch):
    """The demo alias is looked up (and would be fetched/converted) under QLORA_NB_CACHE, nowhere else."""
    from qlora_nb.engine.model import models

    monkeypatch.setenv("QLORA_NB_CACHE", str(tmp_path))
    folder = tmp_path / "models" / "smollm2-135m"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert models.resolve_model("smollm2-135m") == folder


# ---------------------------------------------------------------- reproducible
def _losses(model_dir, tmp, seed, tag):
    s = qlora_nb.load(str(model_dir), r=4, dropout=0.1)
    res = s.train(data=_rows(), max_steps=3, batch_size=4, val_split=0, seed=seed, output_dir=str(tmp / tag),
                  cutoff_len=32, learning_rate=1e-2)
    return [h["loss"] for h in res.history if "loss" in h]


def test_same_seed_same_losses_on_cpu(tiny_model_dir, tmp_path):
    a = _losses(tiny_model_dir, tmp_path, 7, "a")
    b = _losses(tiny_model_dir, tmp_path, 7, "b")
    c = _losses(tiny_model_dir, tmp_path, 8, "c")
    assert len(a) == 3 and a == b
    assert c != a  # the seed really drives shuffling/dropout: the check above can fail
