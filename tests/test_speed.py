"""The time forecast: cost terms by hand on a tiny architecture, the calibration cache, --measure's restore."""

from __future__ import annotations

import json

import pytest

from qlora_nb.config import PlanConfig
from qlora_nb.errors import QloraError
from qlora_nb.memory import speed as S
from qlora_nb.memory.architectures import Arch
from qlora_nb.memory.forecast import build_forecast, price
from qlora_nb.memory.planner import activation_bytes_per_token_layer, compute_components
from qlora_nb.memory.speed import Rates, Workload, predict_step, run_steps, step_flops

TINY = Arch("tiny", "x/tiny", "llama", hidden=8, intermediate=16, layers=2, heads=2, kv_heads=1, head_dim=4,
            vocab=32, tied=True)
RATES = Rates(matmul_flops_per_s=1e9, elementwise_bytes_per_s=1e9, op_seconds=1e-6, adamw_seconds_per_param=1e-8,
              dequant_seconds_per_weight={4: 1e-9, 8: 2e-9}, matmul_fp32_flops_per_s=5e8, machine="test")


def cfg(**kw) -> PlanConfig:
    return PlanConfig.from_options({"model": "x", "device": "cpu", "r": 2, **kw})


def test_flops_by_hand():
    # per decoder layer: q 8x8, k 8x4, v 8x4, o 8x8, gate/up 8x16, down 16x8 -> sum KN = 64+32+32+64+128*3 = 576
    kn = 2 * 576
    work = Workload(batch_size=2, tokens_per_row=3, sq_tokens_per_row=9, labelled_per_row=1)
    matrices = [{"r": 2, "d_in": 8, "d_out": 8, "count": 2}]  # LoRA on q_proj only
    base, other = step_flops(TINY, "lora", matrices, work)
    assert base == 4 * kn * 6
    lora = 6 * 2 * (8 + 8) * 2 * 6
    attention = 12 * (2 * 8) * 2 * 9  # layers x (heads x head_dim) x rows x l^2
    head = 4 * 8 * 32 * 2 * 1
    assert other == lora + attention + head
    full_base, _ = step_flops(TINY, "full", [], work)
    assert full_base == 6 * kn * 6  # a trained weight also gets its gradient
    ckpt_base, _ = step_flops(TINY, "lora", matrices, work, gradient_checkpointing=True)
    assert ckpt_base == 6 * kn * 6  # one more forward


def test_each_term_by_hand(monkeypatch):
    for name, value in (("MATMUL_EFFICIENCY", 0.5), ("INT8_MATMUL_EFFICIENCY", 0.25), ("ELEMENTWISE_TOUCHES", 2.0),
                        ("OPS_PER_LINEAR", 10.0), ("OPS_PER_LAYER", 100.0)):
        monkeypatch.setattr(S, name, value)
    monkeypatch.setattr(S, "DEQUANT_FACTOR", {4: 3.0, 8: 1.0})
    work = Workload(batch_size=2, tokens_per_row=3, sq_tokens_per_row=9, labelled_per_row=1)
    matrices = [{"r": 2, "d_in": 8, "d_out": 8, "count": 2}]
    base, other = step_flops(TINY, "qlora", matrices, work)
    t = predict_step(TINY, "qlora", 4, matrices, trainable=64, act_bytes_per_token_layer=100, work=work, rates=RATES)
    assert t.terms["matmul"] == pytest.approx((base + other) / 1e9 / 0.5)
    assert t.terms["dequant"] == pytest.approx(2 * 576 * 2 * 1e-9 * 3.0)  # weights x (forward + backward) x rate
    assert t.terms["elementwise"] == pytest.approx(2.0 * 100 * 2 * 6 / 1e9)  # touches x bytes x layers x tokens
    assert t.terms["per_op"] == pytest.approx((10 * (14 + 2) + 100 * 2) * 1e-6)  # 14 linears, 2 adapted
    assert t.terms["optimizer"] == pytest.approx(64 * 1e-8)
    assert t.step_seconds == pytest.approx(sum(t.terms.values()))
    assert t.tokens_per_s == pytest.approx(6 / t.step_seconds)
    # LLM.int8 on CPU: the base's matmuls at the fp32 rate and their own efficiency
    t8 = predict_step(TINY, "lora", 8, matrices, 64, 100, work, RATES)
    assert t8.terms["matmul"] == pytest.approx(base / 5e8 / 0.25 + other / 1e9 / 0.5)
    # accumulation repeats the micro-batch work, not the optimizer step
    t2 = predict_step(TINY, "qlora", 4, matrices, 64, 100, work, RATES, grad_accum=2)
    assert t2.terms["matmul"] == pytest.approx(2 * t.terms["matmul"])
    assert t2.terms["optimizer"] == t.terms["optimizer"]


def test_step_flops_agree_with_the_module_counter(tiny_session):
    """The config-only count equals engine/forecast/flops.py's count from the loaded modules (one source of truth)."""
    from qlora_nb.engine.forecast.flops import flops_model
    from qlora_nb.memory.architectures import arch_from_config

    arch = arch_from_config(tiny_session.model.config.to_dict())
    p = tiny_session.plan(ledger=False)
    base, other = step_flops(arch, "lora", p.matrices, Workload(2, 5, 25, 3))
    assert base + other == pytest.approx(flops_model(tiny_session.model).step(10, 50, 6))


def test_run_steps_and_the_no_data_note():
    work = Workload.padded(4, 128)
    assert run_steps(work, 50, 3.0)[0] == 50
    steps, note = run_steps(work, -1, 3.0)
    assert steps is None and "give data" in note
    with_rows = Workload(4, 100, 1e4, 20, rows=10, from_data=True)
    assert run_steps(with_rows, -1, 2.0)[0] == 6  # ceil(10 / 4) = 3 steps per epoch


def test_workload_from_lengths_caps_at_the_cutoff():
    w = Workload.from_lengths(1, [10, 300], [5, 200], cutoff=100)  # batch 1: no padding (test_time_padding.py)
    assert w.tokens_per_row == 55 and w.sq_tokens_per_row == (100 + 10_000) / 2 and w.labelled_per_row == 52.5
    assert w.rows == 2 and w.from_data


def test_forecast_methods_fastest_and_fit():
    c = cfg(batch_size=4, seq_len=16)
    huge = 10**12
    f = build_forecast(TINY, c, RATES, Workload.padded(4, 16), huge)
    assert [m["method"] for m in f.methods] == ["full", "lora", "lora", "qlora"]
    best = f.fastest
    # the fastest is the minimum over every setup that fits, at the same effective batch
    for method, bits in (("lora", 16), ("qlora", 4), ("lora", 8), ("full", 16)):
        for batch, accum in ((4, 1), (2, 2), (1, 4)):
            t, _ = price(TINY, c.replace(method=method, bits=bits, batch_size=batch, gradient_accumulation_steps=accum),
                         RATES, Workload.padded(batch, 16))
            assert best["step_seconds"] <= t.step_seconds + 1e-12
    assert best["batch_size"] * best["gradient_accumulation_steps"] == 4
    assert f.run_seconds is None and "give data" in f.run_note
    # a limit that nothing fits: no recommendation, and the plan says why
    none = build_forecast(TINY, c, RATES, Workload.padded(4, 16), 1000)
    assert none.fastest is None and "no setup fits" in none.fastest_note
    assert all(m["verdict"] == "won't fit" for m in none.methods)
    # only setups whose memory fits are candidates
    total = {m["label"]: m["memory_bytes"] for m in f.methods}
    limit = int(total["QLoRA (4-bit base)"] / 0.9) + 1  # QLoRA fits; the 16-bit setups at batch 1 may not
    some = build_forecast(TINY, c, RATES, Workload.padded(4, 16), limit)
    chosen = c.replace(method=some.fastest["method"], bits=some.fastest["bits"],
                       batch_size=some.fastest["batch_size"],
                       gradient_checkpointing=some.fastest["gradient_checkpointing"])
    assert sum(compute_components(TINY, chosen)[0].values()) <= 0.9 * limit


def test_price_uses_the_planner_activations():
    c = cfg()
    comp, params, matrices, _ = compute_components(TINY, c)
    t, total = price(TINY, c, RATES, Workload.padded(c.batch_size, c.seq_len))
    act = activation_bytes_per_token_layer(TINY, c, matrices)
    assert t.terms["elementwise"] == pytest.approx(S.ELEMENTWISE_TOUCHES * act * TINY.layers * c.batch_size
                                                    * c.seq_len / RATES.elementwise_bytes_per_s)
    assert total == sum(comp.values())


def test_gpu_rates_are_marked_estimated():
    r = S.gpu_rates("NVIDIA A100-SXM4-80GB")
    assert r.source == "estimated" and r.matmul_flops_per_s == pytest.approx(312e12 * S.GPU_EFFICIENCY)
    assert S.gpu_rates("Voodoo 3") is None
    t = predict_step(TINY, "qlora", 4, [], 0, 100, Workload.padded(1, 8), r)
    assert t.uncertainty == S.ESTIMATED_UNCERTAINTY


# ----------------------------------------------------------------------------- calibration cache
@pytest.fixture
def cache(tmp_path, monkeypatch):
    from qlora_nb.engine.forecast import speed_calibration as C

    monkeypatch.setenv("QLORA_NB_CACHE", str(tmp_path))
    calls = []

    def fake(shapes, dtype="bfloat16", device="cpu", tokens=512, repeats=7):
        calls.append((tuple(shapes), dtype))
        return Rates(1e9 * len(calls), 1e9, 1e-6, 1e-8, {4: 1e-9}, 2e8, "m")

    monkeypatch.setattr(C, "measure_rates", fake)
    C.forget()
    yield C, calls, tmp_path / C.RATES_FILE
    C.forget()


def test_calibration_is_written_read_and_keyed(cache):
    C, calls, path = cache
    first = C.machine_rates([(8, 16)])
    assert len(calls) == 1 and path.is_file()
    C.forget()  # a new process: the file answers, nothing is measured
    assert C.machine_rates([(8, 16)]) == first and len(calls) == 1
    key = next(iter(json.loads(path.read_text())))
    assert "threads=" in key and "[(8, 16)]" in key and "bfloat16" in key and "torch=" in key
    C.machine_rates([(8, 32)])  # other shapes: measured and kept beside the first
    C.machine_rates([(8, 16)], dtype="float32")  # another dtype too
    assert len(calls) == 3 and len(json.loads(path.read_text())) == 3


@pytest.mark.parametrize("damage", ["{not json", "[1, 2]", '{"KEY": {"matmul_flops_per_s": "x"}}',
                                    '{"KEY": {"matmul_flops_per_s": 0, "elementwise_bytes_per_s": 1}}'])
def test_a_damaged_cache_is_measured_over(cache, damage):
    C, calls, path = cache
    import torch

    key = C.cache_key("cpu", "bfloat16", [(8, 16)], 512, torch.get_num_threads(), torch.__version__)
    path.write_text(damage.replace("KEY", key.replace('"', '\\"')))
    rates = C.machine_rates([(8, 16)])
    assert len(calls) == 1 and rates.matmul_flops_per_s > 0
    assert Rates.from_dict(json.loads(path.read_text())[key]) == rates  # rewritten with the new measurement


def test_measure_rates_really_measures():
    from qlora_nb.engine.forecast.speed_calibration import measure_rates

    r = measure_rates([(16, 32)], tokens=16, repeats=1)
    assert r.matmul_flops_per_s > 0 and r.matmul_fp32_flops_per_s > 0 and r.elementwise_bytes_per_s > 0
    assert r.op_seconds > 0 and r.adamw_seconds_per_param > 0 and r.source == "measured"


# ----------------------------------------------------------------------------- plans with time
@pytest.fixture
def shell():
    from IPython.testing.globalipapp import get_ipython, start_ipython

    ip = start_ipython() or get_ipython()  # one global shell per process
    ip.run_line_magic("load_ext", "qlora_nb")
    yield ip
    ip.run_line_magic("unload_ext", "qlora_nb")


def test_plan_carries_time_and_says_give_data(cache):
    import qlora_nb

    p = qlora_nb.plan("smollm2-135m", device="cpu", batch_size=4, seq_len=128)
    assert p.step_seconds > 0 and p.run_seconds is None
    assert "time:" in str(p) and "give data" in str(p) and "fastest that fits" in str(p)
    d = p.as_dict()
    assert d["step_seconds"] == p.step_seconds and d["fastest"] == p.fastest
    assert qlora_nb.plan("smollm2-135m", device="cpu", max_steps=10).run_seconds == pytest.approx(
        10 * qlora_nb.plan("smollm2-135m", device="cpu").step_seconds)
    est = qlora_nb.plan("smollm2-135m", gpu_model="T4", gpu="16GB")
    assert est.forecast.time.source == "estimated" and "estimated" in str(est)
    with pytest.raises(QloraError, match="gpu_model"):
        qlora_nb.plan("smollm2-135m", gpu_model="Voodoo 3")
    with pytest.raises(QloraError, match="tokenizer"):
        qlora_nb.plan("smollm2-135m", device="cpu", data=[{"instruction": "a", "output": "b"}])


def test_session_plan_with_data_gives_the_run_total(tiny_session, cache):
    rows = [{"instruction": f"say {i}", "output": "ok"} for i in range(20)]
    p = tiny_session.plan(ledger=False, data=rows, batch_size=2, epochs=1)
    f = p.forecast
    assert f.workload.from_data and f.workload.rows == 18  # 10% held out, as training does
    assert f.steps == 9 and p.run_seconds == pytest.approx(9 * p.step_seconds)


def test_measure_restores_the_session_and_skips_what_does_not_fit(tiny_session, cache):
    import gc

    import torch

    from qlora_nb.engine.rollback import fingerprint

    s = tiny_session
    before = fingerprint(s)
    weights = {n: p.detach().clone() for n, p in s.model.named_parameters()}
    led = s.ledger(measure=False).as_dict()
    rng = torch.random.get_rng_state()
    gc.collect()
    rows = [{"instruction": f"say {i}", "output": "ok"} for i in range(20)]
    p = s.plan(measure=True, steps=2, data=rows, batch_size=2, seq_len=32)
    measured = {(m["method"], m["bits"]): m for m in p.forecast.measured}
    assert measured[("lora", 16)]["step_seconds"] > 0 and measured[("qlora", 4)]["step_seconds"] > 0
    assert "priced, not measured" in measured[("full", 16)]["why"]
    assert "measured" in str(p)
    assert fingerprint(s) == before
    assert all(torch.equal(weights[n], q) for n, q in s.model.named_parameters())
    assert s.ledger(measure=False).as_dict() == led
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert s.runs == []  # the session itself was never trained

    # a limit nothing fits in: nothing is loaded or trained, and each row says why
    def no_loader(*a, **k):
        raise AssertionError("a setup that does not fit was tried")

    from qlora_nb.engine.forecast.speed_measure import measure_setups

    small = s.plan(ledger=False, gpu="1MB", device="cpu", data=rows)
    out = measure_setups(s, small, steps=2, loader=no_loader)
    assert len(out) == 4
    assert all("not tried" in m["why"] or "priced" in m["why"] for m in out)


def test_plan_magic_measure_flags(shell, capsys, tiny_session, cache):
    shell.user_ns["qlora"] = tiny_session
    shell.run_line_magic("qlora_plan", "--text --max-steps 7 -o p")
    p = shell.user_ns["p"]
    assert p.run_seconds == pytest.approx(7 * p.step_seconds)
    out = capsys.readouterr().out
    assert "time:" in out and "by method" in out
    with pytest.raises(QloraError, match="--measure times real steps"):
        shell.run_line_magic("qlora_plan", "smollm2-135m --measure --text")


def test_dashboard_shows_predicted_beside_measured_and_an_eta_before_step_one():
    from types import SimpleNamespace

    from qlora_nb.events import EventBus
    from qlora_nb.views.dashboard import TrainingDashboard

    s = SimpleNamespace(events=EventBus(), config=SimpleNamespace(model="tiny"), stop_requested=False)
    dash = TrainingDashboard.for_session(s, {"max_steps": 10})
    s.events.emit("train_begin", max_steps=10, predicted_step_s=2.0)
    dash.flush()
    assert dash.progress["eta_s"] == pytest.approx(20.0) and dash.progress["predicted_step_s"] == 2.0
    s.events.emit("step", step=1, loss=1.0, max_steps=10, eta_s=18.0, step_s=2.5, predicted_step_s=2.0)
    dash.flush()
    assert "2.50 s/step (predicted 2.00)" in dash.text()


def test_training_uses_the_forecast_for_the_eta_at_step_one(tiny_session, cache, tmp_path):
    events = []
    rows = [{"instruction": f"say {i}", "output": "ok"} for i in range(12)]
    tiny_session.train(data=rows, max_steps=3, batch_size=2, val_split=0, n_probes=0, output_dir=str(tmp_path / "r"),
                       on_event=events.append)
    begin = next(e for e in events if e["kind"] == "train_begin")
    steps = [e for e in events if e["kind"] == "step"]
    predicted = begin["predicted_step_s"]
    assert predicted > 0 and all(e["predicted_step_s"] == predicted for e in steps)
    assert steps[0]["eta_s"] == pytest.approx(predicted * 2)  # two steps left after step 1
    assert all(e["step_s"] > 0 for e in steps)


def test_studio_forecast_shows_step_and_run_time(tiny_session, cache):
    from qlora_nb.views.studio import Studio

    rows = [{"instruction": f"say {i}", "output": "ok"} for i in range(20)]
    studio = Studio(tiny_session, data=rows, user_ns={"rows": rows})
    studio.values = {**studio.values, "max_steps": 5, "batch_size": 4}
    t = studio.forecast["time"]
    assert t["step_seconds"] > 0 and t["run_seconds"] == pytest.approx(5 * t["step_seconds"])
    assert t["fastest"]["applicable"] in (True, False) and t["from_data"]


def test_several_devices_share_the_rows_of_a_run(tiny_session, cache):
    rows = [{"instruction": f"say {i}", "output": "ok"} for i in range(20)]
    one = tiny_session.plan(ledger=False, data=rows, batch_size=2, epochs=1)
    two = tiny_session.plan(ledger=False, data=rows, batch_size=2, epochs=1, gpus=2)
    assert one.forecast.steps == 9 and two.forecast.steps == 5  # 18 rows / (2 devices x batch 2), rounded up
    assert two.forecast.time.terms["communication"] > 0 and "gloo between CPU processes" in str(two)
