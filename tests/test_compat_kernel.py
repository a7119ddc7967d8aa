"""01_quickstart on Colab's kernel generation: ipykernel 6 (no subshells) with the oldest supported ipywidgets.

A second full venv would cost minutes of installs; instead the three packages that differ
(``tests/compat-requirements.txt``) are installed with ``pip install --no-deps --target`` into an overlay
(about 2 MB, seconds) and put first on the kernel's PYTHONPATH, so the kernel imports ipykernel 6 and
ipywidgets 8.0 over the lock's ipykernel 7 / ipywidgets 8.1, and everything else from the one tested venv.

After the tutorial runs (few steps), three cells are appended and checked:
* the dashboard's plain-text fallback in the saved output, and its "use Interrupt" hint (Stop is not live);
* interrupt-to-checkpoint: a SIGINT at step 1 (what Kernel -> Interrupt sends to an ipykernel process)
  ends the run at the step boundary with a checkpoint on disk;
* the error display: a bad option is one QloraError paragraph, not a traceback.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQS = Path(__file__).with_name("compat-requirements.txt")
OVERLAY = ROOT / "test-artifacts" / "compat-overlay"
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def overlay() -> Path:
    """The --target overlay of compat-requirements.txt (rebuilt when that file changes)."""
    digest = hashlib.sha256(REQS.read_bytes()).hexdigest()[:16]
    stamp = OVERLAY / f".stamp-{digest}"
    if not stamp.exists():
        shutil.rmtree(OVERLAY, ignore_errors=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
                               "--target", str(OVERLAY), "-r", str(REQS)], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        stamp.touch()
    return OVERLAY


EXTRA = [
    ("versions", "import ipykernel, ipywidgets\nprint('COMPAT', ipykernel.__version__, ipywidgets.__version__)"),
    ("interrupt", "import os, signal\n"
                  "def _interrupt(e):\n"
                  "    if e.get('kind') == 'step' and e.get('step') == 1:\n"
                  "        os.kill(os.getpid(), signal.SIGINT)  # what Kernel -> Interrupt sends\n"
                  "_unsub = qlora.events.subscribe(_interrupt)"),
    ("interrupted_run", "%%qlora_train -o run2\ndata: demo\nmax_steps: 40\noutput_dir: runs/interrupted\n"
                        "val_split: 0\nn_probes: 0"),
    ("interrupt_result", "_unsub()\nprint('INTERRUPTED', run2.interrupted, run2.checkpoint is not None "
                         "and os.path.isdir(run2.checkpoint), run2.checkpoint)"),
    ("error", "%%qlora_train\ndata: no_such_file.jsonl"),
]


def _text(outputs: list) -> str:
    parts = []
    for o in outputs:
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        elif o.get("output_type") == "error":
            parts.append("\n".join(o.get("traceback", [])))
        else:
            parts.append(str(o.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def test_quickstart_on_ipykernel6(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(overlay()), os.environ.get("PYTHONPATH", "")]).rstrip(
        os.pathsep))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    work = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", work, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "*.ipynb"))
    nb = nbformat.read(ROOT / "notebooks" / "01_quickstart.ipynb", as_version=4)
    for cell in nb.cells:
        cell.source = re.sub(r"^STEPS = \d+", "STEPS = 2", cell.source, flags=re.M)
        cell.source = re.sub(r"--max-new-tokens \d+", "--max-new-tokens 8", cell.source)  # behaviour, not text
    for tag, src in EXTRA:
        nb.cells.append(nbformat.v4.new_code_cell(src, metadata={"tags": [tag] + (["raises-exception"]
                                                                                  if tag == "error" else [])}))
    client = NotebookClient(nb, timeout=600, startup_timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(work)}})
    try:
        client.execute()
    finally:
        (ROOT / "test-artifacts").mkdir(exist_ok=True)
        nbformat.write(nb, ROOT / "test-artifacts" / "01_quickstart-ipykernel6.ipynb")
    by_tag = {c.metadata.get("tags", [None])[0]: c for c in nb.cells if c.cell_type == "code"}

    assert "COMPAT 6.29.5 8.0.0" in _text(by_tag["versions"].outputs)

    train_cell = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("%%qlora_train -o run\n"))
    text = _text(train_cell.outputs)
    assert re.search(r"training smollm2-135m: done · step 2/2", text), text[-1500:]  # plain-text fallback
    states = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    dashboards = [s["state"] for s in states.values() if "stop_live" in s.get("state", {})]
    assert dashboards and all(d["stop_live"] is False for d in dashboards)
    assert any("use Interrupt (■ in the toolbar / Kernel → Interrupt)" in d.get("message", "") for d in dashboards)

    assert "INTERRUPTED True True" in _text(by_tag["interrupt_result"].outputs)

    err = by_tag["error"].outputs
    assert [o["ename"] for o in err if o["output_type"] == "error"] == ["QloraError"]
    shown = _text(err)
    assert "no_such_file.jsonl" in shown and "Traceback" not in shown and len(shown.splitlines()) <= 4, shown
