"""Shared by the benchmark workers: how tokens, time and memory are counted, identically for every contender.

Each worker runs in a fresh process started by ``run.py`` and writes one JSON
result. Counting is done here, outside the code being measured, so the
toolkit and the plain recipe cannot report their own figures differently:

* non-padding tokens are summed from the ``attention_mask`` the decoder
  receives in training-mode forwards (``input_ids.numel()`` when there is no
  mask, e.g. packed batches), through a forward pre-hook;
* the training window runs from the first training forward to the last
  optimizer-step end; "steady" figures drop step 1 (allocator warm-up, lazy
  kernel selection);
* peak memory is the process's ``ru_maxrss`` on CPU (the parent also reads it
  with ``wait4``), ``torch.cuda.max_memory_allocated`` on GPU.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_now_bytes() -> int:
    try:
        with open(f"/proc/{os.getpid()}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def peak_memory(device: str) -> dict[str, Any]:
    out: dict[str, Any] = {"peak_rss_bytes": peak_rss_bytes()}
    if device.startswith("cuda"):
        import torch

        out["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
        out["cuda_max_reserved_bytes"] = int(torch.cuda.max_memory_reserved())
    return out


def decoder_of(model):
    """The module whose ``forward`` gets ``input_ids``/``attention_mask`` for every forward pass.

    peft wraps the causal LM (PeftModel -> LoraModel -> XForCausalLM); the
    causal LM calls its decoder (``.model``) through ``__call__``, so a hook
    there fires for training, evaluation and generation alike.
    """
    base = model
    for attr in ("get_base_model",):
        if hasattr(base, attr):
            base = getattr(base, attr)()
    inner = getattr(base, "model", None)
    import torch

    return inner if isinstance(inner, torch.nn.Module) else base


class TokenMeter:
    """Counts tokens seen by the decoder, and timestamps the training window.

    ``train_tokens``: non-padding tokens in training-mode forwards.
    ``gen_rows``: rows in no-grad eval-mode forwards; each such forward yields
    one new token per row during ``generate`` (prefill included).
    """

    def __init__(self, model) -> None:
        self.train_tokens = 0
        self.train_padded = 0
        self.gen_rows = 0
        self.first_forward: float | None = None
        self.first_forward_cpu: float | None = None
        self.step_ends: list[tuple[float, int]] = []  # (time, train_tokens so far)
        self.step_cpu: list[float] = []  # process CPU seconds at each step end (less sensitive to a busy machine)
        self._handle = decoder_of(model).register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        import torch

        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        if ids is None:
            return None
        mask = kwargs.get("attention_mask")
        if module.training and torch.is_grad_enabled():
            if self.first_forward is None:
                self.first_forward = time.perf_counter()
                self.first_forward_cpu = time.process_time()
            padded = int(ids.shape[0] * ids.shape[1])
            real = int(mask.sum()) if isinstance(mask, torch.Tensor) and mask.dim() == 2 else padded
            self.train_tokens += real
            self.train_padded += padded
        elif not torch.is_grad_enabled():
            self.gen_rows += int(ids.shape[0])
        return None

    def step_end(self) -> None:
        self.step_ends.append((time.perf_counter(), self.train_tokens))
        self.step_cpu.append(time.process_time())

    def close(self) -> None:
        self._handle.remove()

    def summary(self) -> dict[str, Any]:
        """Throughput over all steps and over steps 2.. (steady state)."""
        out: dict[str, Any] = {"steps_seen": len(self.step_ends), "train_tokens": self.train_tokens,
                               "train_padded_tokens": self.train_padded}
        if self.train_padded:
            out["padding_fraction"] = 1 - self.train_tokens / self.train_padded
        if self.first_forward is not None and self.step_ends:
            t_end, tok_end = self.step_ends[-1]
            window = t_end - self.first_forward
            out["train_seconds"] = window
            out["tokens_per_s"] = tok_end / window if window > 0 else None
            out["first_step_seconds"] = self.step_ends[0][0] - self.first_forward
            if len(self.step_ends) > 1:
                t1, tok1 = self.step_ends[0]
                steady = t_end - t1
                out["steady_seconds"] = steady
                out["steady_step_seconds"] = steady / (len(self.step_ends) - 1)
                out["steady_tokens_per_s"] = (tok_end - tok1) / steady if steady > 0 else None
                cpu = self.step_cpu[-1] - self.step_cpu[0]
                out["steady_tokens_per_cpu_s"] = (tok_end - tok1) / cpu if cpu > 0 else None
            else:
                out["steady_step_seconds"] = window
                out["steady_tokens_per_s"] = out["tokens_per_s"]
        return out


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL/JSON file (the benchmark data is always one of these)."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".json":
        data = json.loads(text)
        return data if isinstance(data, list) else data.get("rows") or data.get("data") or []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def worker_main(fn) -> None:
    """Run ``fn(spec) -> dict`` with the spec from argv[1]; write the result (or the error) to spec['out']."""
    spec = json.loads(Path(sys.argv[1]).read_text())
    started = time.perf_counter()
    try:
        result = fn(spec)
        result["ok"] = True
    except BaseException as exc:  # noqa: BLE001 - a failed run is a result the report shows
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}".strip()[:2000],
                  "traceback": traceback.format_exc()[-4000:]}
    result["worker_seconds"] = time.perf_counter() - started
    result.setdefault("memory", peak_memory(spec.get("device", "cpu")))
    Path(spec["out"]).write_text(json.dumps(result, indent=1, default=str))
    sys.stdout.flush()
    os._exit(0 if result["ok"] else 1)  # skip slow interpreter teardown of torch/transformers


def run_cell_in_kernel(code: str, root: Path, timeout: float) -> dict[str, Any]:
    """Execute ``code`` in a fresh Jupyter kernel (``root`` first on its path) and return the JSON it prints.

    The overhead benchmarks need a real kernel (comm messages, subshells); the cell reports by printing one
    ``RESULT {json}`` line, and an error in the cell ends the benchmark with the kernel's traceback.
    """
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", env=dict(os.environ, PYTHONPATH=str(root)))
    try:
        msg_id = kc.execute(code)
        while True:
            msg = kc.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "error":
                sys.exit("\n".join(msg["content"]["traceback"]))
            if msg["msg_type"] == "stream" and msg["content"]["text"].startswith("RESULT "):
                return json.loads(msg["content"]["text"][len("RESULT "):])
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def report_json(result: dict[str, Any], out: str | None) -> None:
    """Print ``result`` as JSON, and write it to ``out`` too when given."""
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
