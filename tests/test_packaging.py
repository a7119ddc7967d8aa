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
    import re

    from qlora_nb.views.base import esm, static_dir

    files = list(static_dir().glob("*.js"))
    # helper modules (imported by the widgets, inlined into them) have no default export; widgets have one
    helpers = {m for js in files for m in re.findall(r'from "\./([\w.-]+\.js)"', js.read_text(encoding="utf-8"))}
    assert "format.js" in helpers
    for js in files:
        text = esm(js.name)
        assert 'from "./' not in text and "from './" not in text, js.name
        if js.name not in helpers:
            assert text.count("export default") == 1, js.name
