"""The multi-device planner against published FSDP-QLoRA figures, and its layouts side by side.

No GPU here, so the check is against what Answer.AI published for their FSDP + QLoRA release
(``benchmarks_03_2024.md`` in AnswerDotAI/fsdp_qlora): Llama-2-70B, QLoRA r=64 on all linear layers, batch
2 x 2048 tokens, gradient checkpointing, two 24 GB cards with CPU offload, 14.92 GiB reserved per GPU. The
planner's per-device peak is compared with it; the other rows are the planner's own forecasts for the same
model and for Llama-2-7B under DDP, FSDP and FSDP + offload (no published figure: forecasts only).

    python benchmarks/multi_device_check.py     # prints the table, writes results/multi-device.json and
                                                # MULTI_DEVICE.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

GIB = 2**30
SEVENTY = dict(gpu="24GB", seq_len=2048, batch_size=2, gradient_checkpointing=True, r=64)
SEVEN = dict(gpu="24GB", seq_len=1024, batch_size=4, gradient_checkpointing=True)
# (model, layout, options, published GiB per device or None, source)
CASES = [
    ("llama-2-70b", "1 GPU", dict(SEVENTY), None, None),
    ("llama-2-70b", "2 GPUs FSDP", dict(SEVENTY, gpus=2, strategy="fsdp"), None, None),
    ("llama-2-70b", "2 GPUs FSDP + CPU offload", dict(SEVENTY, gpus=2, strategy="fsdp", cpu_offload=True), 14.92,
     "Answer.AI benchmarks_03_2024.md (2x 3090/4090, reserved per GPU)"),
    ("llama-2-7b", "1 GPU", dict(SEVEN), None, None),
    ("llama-2-7b", "2 GPUs DDP", dict(SEVEN, gpus=2, strategy="ddp"), None, None),
    ("llama-2-7b", "2 GPUs FSDP", dict(SEVEN, gpus=2, strategy="fsdp"), None, None),
    ("llama-2-7b", "4 GPUs FSDP", dict(SEVEN, gpus=4, strategy="fsdp"), None, None),
    ("llama-2-7b", "2 GPUs FSDP + CPU offload", dict(SEVEN, gpus=2, strategy="fsdp", cpu_offload=True), None, None),
]


def main() -> int:
    import qlora_nb

    rows = []
    for model, layout, options, published, source in CASES:
        p = qlora_nb.plan(model, **options)
        row = {"model": model, "layout": layout, "options": options, "per_device_gib": p.per_device_peak / GIB,
               "verdict": p.verdict, "host_ram_gib": (p.host_ram.get("total") or 0) / GIB,
               "published_gib": published, "source": source}
        if published:
            row["error_pct"] = 100 * (row["per_device_gib"] / published - 1)
        rows.append(row)
    lines = ["# Multi-device planner check (`benchmarks/multi_device_check.py`)", "",
             "QLoRA (NF4 + double quantization), LoRA on all linear layers, gradient checkpointing, 24 GB per "
             "device. Llama-2-70B: r=64, batch 2 x 2048 (Answer.AI's recipe); Llama-2-7B: r=16, batch 4 x 1024.",
             "", "| model | layout | per-device peak (planner) | published | error | verdict | host RAM |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        pub = f"{r['published_gib']:.2f} GiB" if r["published_gib"] else "–"
        err = f"{r['error_pct']:+.1f}%" if "error_pct" in r else "–"
        lines.append(f"| {r['model']} | {r['layout']} | {r['per_device_gib']:.2f} GiB | {pub} | {err} | "
                     f"{r['verdict']} | {r['host_ram_gib']:.1f} GiB |")
    lines += ["", "Published figure: " + "; ".join(sorted({r["source"] for r in rows if r["source"]})) + ". The "
              "per-device peak here is qlora_nb's own stack (fp32 adapters on all seven linears, the CUDA context "
              "included) against a reserved figure of Answer.AI's stack; the like-for-like check of every "
              "published per-GPU figure (their stacks, reserved vs reserved, fit and held-out rows) is "
              "PUBLISHED_MEMORY.md. The other rows are forecasts. Host RAM is what offload and "
              "`cpu_ram_efficient_loading` need (process runtimes, loading, offloaded shards)."]
    text = "\n".join(lines) + "\n"
    print(text)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "multi-device.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    (HERE / "MULTI_DEVICE.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
