"""The wheel carries the widgets' ES modules, so a non-editable install renders them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contains_every_widget_module(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    wheel = next(tmp_path.glob("qlora_nb-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assets = sorted(p.name for p in (ROOT / "widgets").iterdir() if p.suffix in (".js", ".css"))
    assert "breakdown.js" in assets
    for name in assets:
        assert f"qlora_nb/_static/{name}" in names, name


def test_widget_modules_resolve_without_relative_imports():
    from qlora_nb.views.base import esm, static_dir

    for js in static_dir().glob("*.js"):
        text = esm(js.name)
        assert 'from "./' not in text and "from './" not in text, js.name
        if js.name != "format.js":
            assert "export default" in text, js.name
