"""requirements.lock: one fully pinned environment for make demo/test, CI and Binder (written by `make lock`)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
try:
    from lock import canonical, parse
finally:
    sys.path.remove(str(ROOT / "scripts"))

LOCK = ROOT / "requirements.lock"
BINDER = ROOT / "binder" / "requirements.txt"


def _names(reqs: list[str]) -> set[str]:
    return {canonical(re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0]) for r in reqs}


def test_lock_and_binder_agree_on_every_shared_package():
    lock, binder = parse(LOCK), parse(BINDER)
    shared = set(lock) & set(binder)
    assert len(shared) > 20
    differ = {n: (lock[n], binder[n]) for n in shared if lock[n] != binder[n]}
    assert not differ, f"requirements.lock and binder/requirements.txt disagree (run `make lock`): {differ}"
    assert set(binder) <= set(lock), f"Binder pins packages the lock lacks: {sorted(set(binder) - set(lock))}"


def test_lock_covers_pyproject_and_pins_the_cpu_torch():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"]) | _names(project["optional-dependencies"]["test"])
    lock = parse(LOCK)  # refuses any line not pinned with ==
    assert wanted <= set(lock), f"not in requirements.lock: {sorted(wanted - set(lock))}"
    assert lock["torch"].endswith("+cpu")
    assert "qlora-nb" not in lock  # installed from the tree, --no-deps


def test_every_install_path_uses_the_lock():
    make = (ROOT / "Makefile").read_text()
    assert "-r requirements.lock" in make and "scripts/lock.py --torch-pin" in make and "\nlock:" in make
    assert "make test" in (ROOT / ".ci" / "run").read_text()  # CI installs through the Makefile
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in BINDER.read_text().splitlines()
