"""The machine a benchmark ran on, described once: ``run.py`` and ``gpu_check.py`` both record this.

Nothing here imports torch on a CPU run (the parent of ``make bench`` stays
light); a CUDA description asks torch for the capability and memory.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

PACKAGES = ("qlora_nb", "torch", "transformers", "peft", "bitsandbytes", "accelerate", "unsloth")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (what ``lscpu`` shows), else the platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0] if out else None


def versions() -> dict[str, str]:
    """Python and the installed versions of the stack (package metadata: nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def fingerprint(device: str) -> dict[str, Any]:
    """``name`` (file-name safe: device kind, cores, CPU/GPU model), ``cpu``, ``cores``, ``host``, ``versions``;
    on CUDA also ``gpu``, ``capability``, ``gpu_memory`` and ``cuda``."""
    fp: dict[str, Any] = {"device": device, "cpu": cpu_model(), "cores": os.cpu_count(), "host": platform.node(),
                          "versions": versions()}
    if device.startswith("cuda"):
        fp["gpu"] = gpu_name() or "gpu"
        try:
            import torch

            if torch.cuda.is_available():
                fp.update(gpu=torch.cuda.get_device_name(), capability=list(torch.cuda.get_device_capability()),
                          gpu_memory=torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory,
                          cuda=torch.version.cuda)
        except ImportError:
            pass
        name = f"cuda-{fp['gpu']}"
    else:
        cpu = re.sub(r"\((R|TM)\)|\bprocessor\b|\bCPU\b", "", fp["cpu"], flags=re.I)
        name = f"cpu-{fp['cores']}core-{cpu}"
    fp["name"] = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return fp
