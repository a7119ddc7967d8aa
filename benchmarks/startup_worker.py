"""Start-up costs as a notebook user meets them, in a fresh process with an IPython shell.

* ``load_ext``: ``%load_ext qlora_nb`` (and whether it pulled in torch: it must not);
* ``cold``: the first ``%qlora_load`` in the process: imports torch/transformers/
  peft/bitsandbytes, reads the cached converted model (usually from the page
  cache, since earlier runs read it), quantizes and attaches LoRA;
* ``warm``: ``%qlora_unload`` then ``%qlora_load`` again in the same process;
* ``first_ever`` (spec ``first_ever``): an empty ``QLORA_NB_CACHE`` holding only
  the downloaded GGUF, so the GGUF -> safetensors conversion is included (the
  download itself is not timed).
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from typing import Any

from common import worker_main


def run(spec: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    ipython_seconds = time.perf_counter() - t0
    heavy = ("torch", "transformers", "peft", "bitsandbytes", "plotly")
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        t = time.perf_counter()
        shell.run_line_magic("load_ext", "qlora_nb")
        load_ext = time.perf_counter() - t
        imported = [m for m in heavy if m in sys.modules]
        model = spec["model"]
        t = time.perf_counter()
        shell.run_line_magic("qlora_load", f"{model} --name s")
        cold = time.perf_counter() - t
        if "s" not in shell.user_ns:
            raise RuntimeError(f"%qlora_load did not bind a session: {sink.getvalue()[-500:]}")
        out: dict[str, Any] = {"ipython_seconds": ipython_seconds, "load_ext_seconds": load_ext,
                               "heavy_modules_after_load_ext": imported, "cold_load_seconds": cold}
        if spec.get("first_ever"):
            return out
        shell.run_line_magic("qlora_unload", "--session s")
        t = time.perf_counter()
        shell.run_line_magic("qlora_load", f"{model} --name s")
        out["warm_load_seconds"] = time.perf_counter() - t
    return out


if __name__ == "__main__":
    worker_main(run)
