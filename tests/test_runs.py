"""The run history: two tiny runs listed and compared from a fresh process, damaged folders, bad input, the view."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import qlora_nb
from qlora_nb.errors import QloraError

ROWS = [{"q": f"{i} plus {i % 5}", "output": f"{i + i % 5}"} for i in range(24)]
FAST = dict(template="Q: {q}\nA: {output}", batch_size=4, cutoff_len=64, warmup_steps=0, n_probes=0)


@pytest.fixture(scope="module")
def two_runs(tiny_model_dir, tmp_path_factory):
    """Run "a" (defaults, a checkpoint every 2 steps) and run "b" (other lr, a task metric)."""
    root = tmp_path_factory.mktemp("history") / "runs"
    session = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0)
    a = session.train(data=ROWS, max_steps=4, eval_steps=2, save_steps=2, output_dir=str(root / "a"), **FAST)
    b = session.train(data=ROWS, max_steps=4, eval_steps=2, learning_rate=1e-3, eval_metric="exact_match",
                      eval_metric_rows=2, output_dir=str(root / "b"), **FAST)
    return root, a, b


def test_listing_in_a_fresh_process(two_runs):
    """A new interpreter (a fresh kernel) lists both runs from disk alone, without importing torch."""
    root, a, b = two_runs
    code = (f"import json, sys, qlora_nb; runs = qlora_nb.runs({str(root)!r}); print(runs); "
            "print(runs.compare('a', 'b')); print('JSON' + json.dumps([r.summary() for r in runs])); "
            "print('TORCH', 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert "2 run(s) in" in out and "TORCH False" in out
    summaries = {s["name"]: s for s in json.loads(out.split("JSON", 1)[1].splitlines()[0])}
    sa, sb = summaries["a"], summaries["b"]
    assert sa["status"] == sb["status"] == "done" and sa["steps"] == sb["steps"] == 4 and sa["max_steps"] == 4
    assert sa["train_loss"] == pytest.approx(a.losses[-1]) and sb["eval_loss"] == pytest.approx(b.eval_losses[-1])
    assert sa["tokens_per_s"] == pytest.approx(a.metrics["tokens_per_s"]) and sa["peak_memory"] > 0
    assert sa["duration_s"] == pytest.approx(a.metrics["wall_s"])
    assert sb["metric"] == b.metrics["eval_metric_summary"] and sb["metric"].startswith("exact match ")
    assert sa["metric"] == ""
    assert sa["data"] == "<list>" or sa["data"] == "list"
    assert sa["data_sha256"] and sa["data_sha256"] == sb["data_sha256"]  # same rows, same fingerprint
    assert sb["changed"]["learning_rate"] == 1e-3 and "learning_rate" not in sa["changed"]
    assert sa["changed"]["save_steps"] == 2 and sa["changed"]["max_steps"] == 4
    assert sa["adapter_dir"] == str(a.adapter_dir) and sa["checkpoint"].endswith("checkpoint-4")
    assert sb["checkpoint"] is None and sa["model"]
    assert "* learning_rate" in out and "* eval_metric" in out  # the comparison marks what differs


def test_history_curves_and_compare(two_runs):
    root, a, b = two_runs
    runs = qlora_nb.runs(str(root))
    assert runs.names == ["a", "b"]
    curve = runs["b"].curve()
    assert curve["steps"] == [1, 2, 3, 4] and curve["loss"] == pytest.approx(b.losses)
    assert curve["eval_steps"] == [2, 4] and curve["eval_loss"] == pytest.approx(b.eval_losses)
    assert curve["metric_steps"] == [0, 2, 4]  # the base's score, then each eval
    assert curve["metric"][1:] == pytest.approx(b.eval_metrics)
    cmp = runs.compare("a", "b")
    assert cmp.differences["learning_rate"] == [2e-4, 1e-3]
    assert "batch_size" not in cmp.differences
    df = cmp.to_pandas()
    assert bool(df.loc["learning_rate", "differs"]) and not bool(df.loc["batch_size", "differs"])
    assert set(cmp.curves()) == {"a", "b"}
    with pytest.raises(QloraError, match=r"no run named 'c'.*Accepted: a, b"):
        runs.compare("a", "c")
    with pytest.raises(QloraError, match=r"compare needs two or more run names, got 1"):
        runs.compare("a")


def test_listing_survives_deleted_and_half_written_runs(two_runs, tmp_path):
    root, a, b = two_runs
    copy = tmp_path / "runs"
    shutil.copytree(root, copy)
    runs = qlora_nb.runs(str(copy))
    shutil.rmtree(copy / "b")  # deleted after it was listed
    assert qlora_nb.runs(str(copy)).names == ["a"]
    with pytest.raises(QloraError, match=r"no run named 'b'"):
        qlora_nb.runs(str(copy)).compare("a", "b")
    assert runs["b"].name == "b"  # an earlier listing still holds what it read
    # half-written: the final config cut off mid-write, the top trainer_state.json garbage; the checkpoint remains
    cfg = copy / "a" / "train_config.json"
    cfg.write_text(cfg.read_text()[:40])
    (copy / "a" / "trainer_state.json").write_text("{")
    # a run that crashed before anything but its marker, and a folder that is no run at all
    shutil.copytree(copy / "a", copy / "crashed")
    for p in (copy / "crashed").iterdir():
        if p.name != "written_by_qlora_nb.json":
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    (copy / "notes").mkdir()
    (copy / "notes" / "x.txt").write_text("hi")
    listed = {r.name: r for r in qlora_nb.runs(str(copy))}
    assert set(listed) == {"a", "crashed"}
    ra = listed["a"]
    assert ra.status == "incomplete" and ra.checkpoint.name == "checkpoint-4"
    assert [h["step"] for h in ra.history if "loss" in h] == [1, 2, 3, 4]  # from the checkpoint's state
    assert any("train_config.json could not be read" in n for n in ra.notes)
    assert listed["crashed"].history == [] and listed["crashed"].steps is None
    text = str(qlora_nb.runs(str(copy)))
    assert "incomplete" in text and "note:" in text


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", r"runs folder .*does not exist"),
    (lambda p: p, r"holds no runs"),
    (lambda p: (p / "f.txt", (p / "f.txt").write_text("x"))[0], r"is a file, not a folder of runs"),
])
def test_bad_runs_folder(tmp_path, make, message):
    with pytest.raises(QloraError, match=message):
        qlora_nb.runs(str(make(tmp_path)))


def test_magic_and_view(two_runs, tiny_model_dir):
    from IPython.testing.globalipapp import get_ipython

    from qlora_nb.views.runs import RunsView

    root, a, b = two_runs
    ip = get_ipython()
    ip.run_line_magic("load_ext", "qlora_nb")
    try:
        ip.run_line_magic("qlora_runs", f"{root}")
        assert ip.user_ns["runs"].names == ["a", "b"]
        ip.run_line_magic("qlora_runs", f"{root} --compare a,b -o cmp")
        assert ip.user_ns["cmp"].names == ["a", "b"]
        with pytest.raises(QloraError, match=r"does not exist"):
            ip.run_line_magic("qlora_runs", f"{root / 'nope'}")
    finally:
        ip.run_line_magic("unload_ext", "qlora_nb")
        for k in ("runs", "cmp"):
            ip.user_ns.pop(k, None)
    session = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0)
    view = RunsView(qlora_nb.runs(str(root)), session=session)
    assert [r["name"] for r in view.runs] == ["a", "b"] and view.can_load
    view.select("a", "b")
    assert view.comparison["names"] == ["a", "b"]
    assert any(r["key"] == "learning_rate" and r["differs"] for r in view.comparison["rows"])
    view._on_front_msg(view, {"event": "load", "name": "b"}, [])
    assert "b" in session.adapters and session.adapters["b"]["source"] == str(b.adapter_dir)
    view._on_front_msg(view, {"event": "load", "name": "b"}, [])
    assert "b_2" in session.adapters  # a second load gets its own name
    view._on_front_msg(view, {"event": "resume", "name": "a"}, [])
    assert "resume: true" in view.cell and f"output_dir: {root / 'a'}" in view.cell
    view._on_front_msg(view, {"event": "resume", "name": "b"}, [])
    assert "has no checkpoint" in view.message
    assert "a vs b" in view.text()
    assert Path(view.runs[0]["adapter_dir"]).is_dir()
