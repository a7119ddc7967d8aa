"""Peak memory of a GGUF export on the demo model, against the plain transformers + peft merge it replaces.

Each contender runs in its own fresh process (``--worker``); a sampling thread
reads the process RSS every 2 ms, and the figure is the peak *above the
process's RSS just before the export starts*:

* toolkit: the demo session loaded (NF4 + double quantization, LoRA r=16 on
  all linear layers, B filled so the adapter is "trained"), then
  ``session.merge(DIR, format="gguf", outtype=...)`` without and with the
  load-back verification;
* plain recipe: the step every GGUF path starts with (Unsloth, LLaMA-Factory,
  llama.cpp's README): load the base in bf16, ``PeftModel.from_pretrained`` the
  same adapter, ``merge_and_unload()``, ``save_pretrained()``; llama.cpp's
  ``convert_hf_to_gguf.py`` would then read that folder (not installable here,
  so not run; it would only add to the plain figure).

The target (issue 21): the export's peak above the loaded session stays below
one 16-bit copy of the model (parameters x 2 bytes).

    python benchmarks/gguf_memory.py [--out results/gguf_memory.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import rss_now_bytes  # noqa: E402


class PeakSampler:
    """Highest RSS seen while the block runs, sampled every ``interval`` seconds in a thread."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_now_bytes())
            time.sleep(self.interval)

    def __enter__(self):
        gc.collect()
        self.start = rss_now_bytes()
        self.peak = self.start
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_now_bytes())

    @property
    def above(self) -> int:
        return self.peak - self.start


def toolkit(workdir: Path, model: str) -> dict:
    import torch

    import qlora_nb

    s = qlora_nb.load(model, r=16, alpha=32, dropout=0.0)
    g = torch.Generator().manual_seed(0)
    for n, p in s.model.named_parameters():
        if ".lora_B." in n:
            p.data.copy_(torch.randn(p.shape, generator=g) * 0.01)
    s.save(workdir / "adapter")
    led = s.ledger(measure=False)
    params = led.params["total"] - led.params["trainable"]
    out = {"base_params": params, "one_16bit_copy_bytes": params * 2, "runs": {}}
    for outtype, verify in (("q8_0", False), ("f16", False), ("q8_0", True)):
        t = time.perf_counter()
        with PeakSampler() as m:
            r = s.merge(workdir / f"g-{outtype}-{verify}", format="gguf", outtype=outtype, verify=verify,
                        verbose=False)
        out["runs"][f"{outtype}{' + verify' if verify else ''}"] = {
            "peak_above_session_bytes": m.above, "file_bytes": r.size_bytes, "seconds": time.perf_counter() - t,
            "verdict": r.verdict()}
    return out


def plain(workdir: Path, model: str) -> dict:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from qlora_nb.engine.model.models import resolve_model

    path = resolve_model(model)
    t = time.perf_counter()
    with PeakSampler() as m:
        base = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.bfloat16)
        merged = PeftModel.from_pretrained(base, str(workdir / "adapter")).merge_and_unload()
        merged.save_pretrained(str(workdir / "plain-merged"))
    return {"runs": {"bf16 merge + save_pretrained": {"peak_above_start_bytes": m.above,
                                                       "seconds": time.perf_counter() - t}}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", default=None)
    ap.add_argument("--worker", choices=("toolkit", "plain"))
    ap.add_argument("--workdir")
    args = ap.parse_args()
    if args.worker:
        fn = toolkit if args.worker == "toolkit" else plain
        print("RESULT " + json.dumps(fn(Path(args.workdir), args.model)))
        sys.stdout.flush()
        os._exit(0)
    from qlora_nb.units import human_bytes

    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for worker in ("toolkit", "plain"):  # toolkit first: it writes the adapter the plain recipe merges
            proc = subprocess.run([sys.executable, __file__, "--worker", worker, "--workdir", tmp, "--model",
                                   args.model], capture_output=True, text=True, check=True)
            line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
            results[worker] = json.loads(line[len("RESULT "):])
    with open("/proc/cpuinfo") as fh:
        cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "unknown")
    results["cpu"] = f"{cpu}, {os.cpu_count()} cores"
    copy16 = results["toolkit"]["one_16bit_copy_bytes"]
    print(f"{args.model} on {results['cpu']}; one 16-bit copy of the base: {human_bytes(copy16)}")
    for name, r in results["toolkit"]["runs"].items():
        print(f"  toolkit {name:<14} peak above the loaded session {human_bytes(r['peak_above_session_bytes']):>10} "
              f"({r['peak_above_session_bytes'] / copy16:.0%} of a 16-bit copy), file {human_bytes(r['file_bytes'])}, "
              f"{r['seconds']:.1f} s")
    for name, r in results["plain"]["runs"].items():
        print(f"  plain   {name}: peak above start {human_bytes(r['peak_above_start_bytes'])} "
              f"({r['peak_above_start_bytes'] / copy16:.0%} of a 16-bit copy), {r['seconds']:.1f} s (before any GGUF "
              "conversion)")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
