"""Adapters out: save → reload round trips, refusals, merge exactness and its checks, the export magics."""

from __future__ import annotations

import json
import re

import pytest

import qlora_nb
from qlora_nb.errors import QloraError, QloraWarning

PROMPTS = ["Hello there, how are you?", "def add(a, b):"]


def _perturb(session, std: float = 0.05, seed: int = 1, adapter: str | None = None) -> None:
    """Give the adapter non-zero B matrices (a fresh LoRA is the identity), as training would."""
    import torch

    name = adapter or session.active_adapter
    g = torch.Generator().manual_seed(seed)
    for n, p in session.model.named_parameters():
        if ".lora_B." in n and f".{name}." in n:
            p.data.copy_(torch.randn(p.shape, generator=g) * std)


def _logits(model, tokenizer, prompts=PROMPTS):
    import torch

    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    model.eval()
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.float()
    return out[enc["attention_mask"].bool()]


@pytest.fixture
def trained(tiny_model_dir):
    s = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0, compute_dtype="float32")
    _perturb(s)
    return s


def test_save_writes_a_plain_peft_folder_that_peft_and_qlora_nb_reload_identically(trained, tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from qlora_nb.engine.model.quantize import guard_cpu_repack

    out = trained.save(tmp_path / "ad")
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "qlora_nb.json", "README.md"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    meta = json.loads((out / "qlora_nb.json").read_text())
    assert meta["load_config"]["r"] == 4 and meta["base_fingerprint"]["hidden_size"] == 64
    assert set(meta["ledger"]["components"]) >= {"quantized_weights", "adapters"}
    card = (out / "README.md").read_text()
    assert "r=4, alpha=8" in card and "NF4" in card and "| quantized_weights |" in card
    expected = _logits(trained.model, trained.tokenizer)

    # qlora_nb: a new session with the saved adapter
    again = qlora_nb.load(str(tiny_model_dir), adapter=str(out), compute_dtype="float32")
    assert torch.equal(_logits(again.model, again.tokenizer), expected)
    # plain peft on an identically quantized base, no qlora_nb involved
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), quantization_config=q, dtype=torch.float32)
    plain = PeftModel.from_pretrained(base, str(out))
    ours, theirs = get_peft_model_state_dict(trained.model), get_peft_model_state_dict(plain)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    # bitsandbytes' CPU inference repack re-rounds the 4-bit constants (adapter-independent); switch it off as
    # every qlora_nb session does, so both bases compute the same numbers
    guard_cpu_repack(plain)
    assert torch.equal(_logits(plain, trained.tokenizer), expected)


def test_load_adapter_adds_a_named_adapter_and_switching_changes_outputs(trained, tiny_session, tmp_path):
    import torch

    trained.save(tmp_path / "my.adapter")
    s = tiny_session  # fresh, untrained active adapter: the loaded one becomes active
    base = _logits(s.model, s.tokenizer)
    name = s.load_adapter(tmp_path / "my.adapter")
    assert name == "my_adapter" and s.active_adapter == "my_adapter"
    assert set(s.adapters) == {"default", "my_adapter"}
    assert not torch.equal(_logits(s.model, s.tokenizer), base)
    trainable = {n for n, p in s.model.named_parameters() if p.requires_grad}
    assert trainable and all(".my_adapter." in n for n in trainable)
    again = s.save(tmp_path / "again", adapter="my_adapter")  # a non-default name still saves a flat folder
    assert (again / "adapter_model.safetensors").is_file() and not (again / "my_adapter").exists()
    assert json.loads((again / "qlora_nb.json").read_text())["adapter_name"] == "my_adapter"
    s.set_adapter("default")
    assert torch.equal(_logits(s.model, s.tokenizer), base)
    # a second load keeps a trained active adapter active, and names must be unique
    _perturb(s, adapter="default", seed=3)
    s.load_adapter(tmp_path / "my.adapter", name="second")
    assert s.active_adapter == "default"
    with pytest.raises(QloraError, match="already has an adapter named 'second'"):
        s.load_adapter(tmp_path / "my.adapter", name="second")


def test_save_refuses_a_non_empty_folder_without_overwrite(trained, tmp_path):
    target = tmp_path / "ad"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(QloraError, match="--overwrite"):
        trained.save(target)
    assert (target / "keep.txt").read_text() == "mine"
    with pytest.raises(QloraError, match="did not write.*keep.txt"):  # issue 15: --overwrite keeps user files
        trained.save(target, overwrite=True)
    assert (target / "keep.txt").read_text() == "mine"
    (target / "keep.txt").unlink()
    trained.save(target)  # an empty folder is fine
    trained.save(target, overwrite=True)  # and the toolkit's own folder is replaced
    assert (target / "adapter_model.safetensors").is_file()


def test_pickle_adapters_need_an_explicit_opt_in(trained, tiny_model_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    out = trained.save(tmp_path / "ad")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text((out / "adapter_config.json").read_text())
    torch.save(load_file(str(out / "adapter_model.safetensors")), pickled / "adapter_model.bin")
    with pytest.raises(QloraError, match="allow-pickle"):
        qlora_nb.load(str(tiny_model_dir), adapter=str(pickled))
    s = qlora_nb.load(str(tiny_model_dir), compute_dtype="float32")
    with pytest.raises(QloraError, match="allow-pickle"):
        s.load_adapter(pickled)
    name = s.load_adapter(pickled, allow_pickle=True)
    assert torch.equal(_logits(s.model, s.tokenizer), _logits(trained.model, trained.tokenizer))
    assert name == "pickled"


def test_missing_and_wrong_adapter_folders_are_named(tiny_session, tmp_path):
    with pytest.raises(QloraError, match="does not exist"):
        tiny_session.load_adapter(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(QloraError, match="no adapter_config.json"):
        tiny_session.load_adapter(tmp_path / "empty")


@pytest.mark.parametrize("with_metadata", [True, False])
def test_adapter_for_another_base_model_names_both_models(trained, tmp_path, with_metadata):
    from conftest import build_tiny_model_dir

    out = trained.save(tmp_path / "ad")
    if not with_metadata:  # a plain peft folder: the shape mismatch itself must be caught
        (out / "qlora_nb.json").unlink()
    other_dir = build_tiny_model_dir(tmp_path / "wider", hidden_size=96, intermediate_size=160)
    with pytest.raises(QloraError) as err:
        qlora_nb.load(str(other_dir), adapter=str(out))
    msg = str(err.value)
    assert "made for" in msg and "wider" in msg and str(trained.model_path.name) in msg
    other = qlora_nb.load(str(other_dir))
    with pytest.raises(QloraError, match="made for"):
        other.load_adapter(out)
    assert set(other.adapters) == {"default"} and other.active_adapter == "default"


def test_merge_fp32_reloads_in_plain_transformers_within_1e_2(trained, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    before = _logits(trained.model, trained.tokenizer)
    result = trained.merge(tmp_path / "merged", dtype="fp32", verbose=False)
    assert result.verified and result.max_abs_diff < 1e-3 and result.modules_checked == 14
    assert torch.equal(_logits(trained.model, trained.tokenizer), before)  # the session is untouched
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"), dtype=torch.float32)
    assert "quantization_config" not in merged.config.to_dict()
    diff = (_logits(merged, trained.tokenizer) - _logits(trained.model, trained.tokenizer)).abs().max().item()
    assert diff < 1e-2
    with trained.model.disable_adapter():
        base = _logits(trained.model, trained.tokenizer)
    assert (_logits(merged, trained.tokenizer) - base).abs().max().item() > 0.05  # the adapter is in there
    assert type(trained.model.get_base_model().model.layers[0].self_attn.q_proj.base_layer).__name__ == "Linear4bit"


def test_merge_of_a_16bit_session_is_exact_in_fp32(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    s = qlora_nb.load(str(tiny_model_dir), bits=16, r=4, alpha=8, dropout=0.0, compute_dtype="float32",
                      targets="q_proj,v_proj", rslora=True)
    _perturb(s)
    result = s.merge(tmp_path / "m", dtype="float32", verbose=False)
    assert result.verified and result.modules_checked == 4
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m"), dtype=torch.float32)
    assert (_logits(merged, s.tokenizer) - _logits(s.model, s.tokenizer)).abs().max().item() < 1e-4


def test_merge_that_did_nothing_fails_loudly_and_saves_nothing(trained, tmp_path, monkeypatch):
    from qlora_nb.engine.export import merge as merge_mod

    monkeypatch.setattr(merge_mod, "merge_copy", lambda peft_copy, name: peft_copy.unload())
    with pytest.raises(QloraError, match="merge did nothing") as err:
        trained.merge(tmp_path / "merged", dtype="fp32", verbose=False)
    assert str(err.value).startswith("merge verification FAILED: ")  # the fail twin of the one pass line
    assert not (tmp_path / "merged").exists()


def test_merge_with_wrong_scaling_is_caught(trained, tmp_path, monkeypatch):
    from qlora_nb.engine.export import merge as merge_mod

    def double_merge(peft_copy, name):  # a classic bug: alpha/r applied twice
        for module in peft_copy.modules():
            if isinstance(getattr(module, "scaling", None), dict) and name in module.scaling:
                module.scaling[name] *= 2
        return peft_copy.merge_and_unload(adapter_names=[name])

    monkeypatch.setattr(merge_mod, "merge_copy", double_merge)
    with pytest.raises(QloraError, match="differs from W"):
        trained.merge(tmp_path / "merged", dtype="fp32", verbose=False)


def test_merge_refuses_when_it_will_not_fit_and_says_how_much_it_needs(trained, tmp_path, capsys):
    from qlora_nb.engine.export.merge import merge_memory

    parts = merge_memory(trained, "default", "float32")
    need = sum(parts.values())
    assert parts["base_copy"] == 4 * (trained.params["total"] - trained.params["trainable"])
    with pytest.raises(QloraError, match="will not fit") as err:
        trained.merge(tmp_path / "merged", dtype="fp32", available_bytes=need - 1)
    assert "available" in str(err.value)
    assert "merge needs" in capsys.readouterr().out
    assert not (tmp_path / "merged").exists()


def test_merge_refuses_an_untrained_adapter(tiny_session, tmp_path):
    with pytest.raises(QloraError, match="untrained"):
        tiny_session.merge(tmp_path / "m")


def test_bf16_merge_checks_weights_and_reports_the_effect_kept(trained, tmp_path):
    result = trained.merge(tmp_path / "m16", dtype="bf16", verbose=False)
    assert result.verified and result.dtype == "bfloat16"
    assert 0 < result.weight_max_error < 0.01 and 0.5 < result.effect_kept <= 1
    meta = json.loads((tmp_path / "m16" / "qlora_nb_merge.json").read_text())
    assert meta["result"]["dtype"] == "bfloat16"


@pytest.mark.integration
def test_demo_model_merge_fp32_within_1e_2(demo_session_factory, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    s = demo_session_factory(r=4, alpha=8, dropout=0.0, compute_dtype="float32", targets="q_proj,v_proj")
    _perturb(s, std=0.01)
    result = s.merge(tmp_path / "merged", dtype="fp32", verbose=False)
    assert result.verified
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"), dtype=torch.float32)
    diff = (_logits(merged, s.tokenizer) - _logits(s.model, s.tokenizer)).abs().max().item()
    assert diff < 1e-2


def test_magics_save_merge_export(trained, tmp_path, write_jsonl):
    from IPython.testing.globalipapp import get_ipython

    ip = get_ipython()
    ip.run_line_magic("load_ext", "qlora_nb")
    try:
        ip.user_ns["qlora"] = trained
        ip.run_line_magic("qlora_save", f"{tmp_path / 'ad'}")
        assert (tmp_path / "ad" / "adapter_model.safetensors").is_file()
        with pytest.raises(QloraError, match="--overwrite"):
            ip.run_line_magic("qlora_save", f"{tmp_path / 'ad'}")
        ip.run_line_magic("qlora_save", f"{tmp_path / 'ad'} --overwrite --adapter default")
        ip.run_line_magic("qlora_merge", f"{tmp_path / 'm'} --dtype fp32 -o mres")
        assert ip.user_ns["mres"].verified
        with pytest.raises(QloraError, match="--dtype"):
            ip.run_line_magic("qlora_merge", f"{tmp_path / 'm2'} --dtype int3")
        data = write_jsonl([{"prompt": "1+1=", "completion": "2"}] * 4)
        ip.run_line_magic("qlora_export", f"{tmp_path / 'job'} --num-processes 4 --fsdp --data {data}")
        text = (tmp_path / "job" / "README.md").read_text()
        assert "--num_processes 4" in text
        assert (tmp_path / "job" / "accelerate_fsdp.yaml").is_file()
    finally:
        ip.run_line_magic("unload_ext", "qlora_nb")


_SIZE = re.compile(r"\b\d+(?:\.\d+)? ?(B|KiB|MiB|GiB|TiB|KB|MB|GB)\b")


def _assert_clean_cell(text: str, caught) -> None:
    """No tqdm bar, no library warning (printed or raised), and every size in MiB or above."""
    assert "it/s" not in text and "%|" not in text, text
    assert "Warning" not in text and "warnings.warn" not in text, text
    assert [str(w.message) for w in caught if not issubclass(w.category, QloraWarning)] == []
    units = set(_SIZE.findall(text))
    assert "MiB" in units and units <= {"MiB", "GiB"}, (units, text)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_save_and_merge_print_one_verdict_line_in_mib_without_library_noise(trained, tmp_path, capsys, dtype):
    import warnings

    from IPython.testing.globalipapp import get_ipython

    ip = get_ipython()
    ip.run_line_magic("load_ext", "qlora_nb")
    try:
        ip.user_ns["qlora"] = trained
        capsys.readouterr()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ip.run_line_magic("qlora_save", f"{tmp_path / 'ad'}")
            ip.run_line_magic("qlora_merge", f"{tmp_path / 'm'} --dtype {dtype}")
        out = capsys.readouterr()
    finally:
        ip.run_line_magic("unload_ext", "qlora_nb")
    text = out.out + out.err
    _assert_clean_cell(text, caught)
    saved = [ln for ln in text.splitlines() if ln.startswith("saved adapter 'default'")]
    assert len(saved) == 1 and "MiB)" in saved[0]
    verdicts = [ln for ln in text.splitlines() if "verif" in ln]
    assert len(verdicts) == 1 and verdicts[0].startswith("merge verified: max |Δlogit| ") and "✓" in verdicts[0]
    assert "on 3 prompts" in verdicts[0] and "14 merged matrices" in verdicts[0]
    assert ("≤ 1e-02" in verdicts[0]) == (dtype == "fp32")
    assert text.index("merge needs") < text.index("merge verified")


def test_session_merge_and_save_are_quiet_and_say_no_verify(trained, tmp_path, capsys):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trained.save(tmp_path / "ad")
        result = trained.merge(tmp_path / "m", dtype="fp32", verify=False)
    out = capsys.readouterr()
    _assert_clean_cell(out.out + out.err, caught)
    assert not result.verified and str(result).startswith("merge NOT verified (--no-verify)")
    on_disk = sum(f.stat().st_size for f in (tmp_path / "m").iterdir())
    assert 0.9 * on_disk < result.size_bytes <= on_disk  # all but the small metadata/marker files
