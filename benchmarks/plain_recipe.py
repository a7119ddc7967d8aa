"""The plain QLoRA recipe, as the PEFT and transformers docs show it: the baseline the toolkit is measured against.

* ``BitsAndBytesConfig(load_in_4bit, nf4, double quant, bf16 compute)`` and
  ``prepare_model_for_kbit_training``, then ``get_peft_model`` with the same
  LoRA settings the toolkit uses (r=16, alpha=32, dropout 0.05, all-linear);
* every example rendered as one text and tokenized with
  ``padding="max_length", truncation=True, max_length=cutoff_len``;
* ``DataCollatorForLanguageModeling(mlm=False)``: the loss covers the whole
  sequence (prompt included), pad positions are -100;
* ``Trainer`` with the same batch size, steps, learning rate and optimizer.

Gradient checkpointing follows the toolkit's setting (off by default) rather
than ``prepare_model_for_kbit_training``'s default (on), so the comparison
measures padding and loss masking, not recomputation. The text of each row is
rendered with the toolkit's template rules (Alpaca layout / chat template) so
both contenders train on identical strings.
"""

from __future__ import annotations

import time
from typing import Any

from common import TokenMeter, peak_memory, read_rows, worker_main


def render_texts(rows: list[dict[str, Any]], tokenizer, template: str | None) -> list[str]:
    """Full training text of each row (prompt + completion), as the toolkit renders it."""
    from qlora_nb.data.template import Template, default_template, render_chat

    if rows and "messages" in rows[0]:
        return [render_chat(tokenizer, r["messages"]) for r in rows]
    tpl = Template.parse(template) if template else default_template(list(rows[0]))
    if tpl is None:
        raise ValueError(f"no template for columns {sorted(rows[0])}")
    return [tpl.render({k: str(v) for k, v in r.items()}) for r in rows]


def run(spec: dict[str, Any]) -> dict[str, Any]:
    t_launch = spec.get("launched_at")
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        BitsAndBytesConfig,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )
    from transformers.utils import logging as tlog

    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    device = spec.get("device", "cpu")
    bits = int(spec.get("bits", 4))
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(spec["model_path"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # bf16 unless told otherwise; gpu_check.py passes the dtype the toolkit resolved (fp16 on T4/V100)
    dtype = getattr(torch, spec.get("compute_dtype", "bfloat16"))
    kwargs: dict[str, Any] = {"dtype": dtype, "device_map": {"": device}}
    if bits == 4:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
    elif bits == 8:
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    model = AutoModelForCausalLM.from_pretrained(spec["model_path"], **kwargs)
    gc = bool(spec.get("gradient_checkpointing", False))
    if bits in (4, 8):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gc)
    elif gc:
        model.gradient_checkpointing_enable()
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", bias="none",
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    load_seconds = time.perf_counter() - t0

    rows = read_rows(spec["data"])
    texts = render_texts(rows, tokenizer, spec.get("template"))
    cutoff = int(spec["cutoff_len"])
    ds = Dataset.from_dict({"text": texts}).map(
        lambda b: tokenizer(b["text"], padding="max_length", truncation=True, max_length=cutoff),
        batched=True, remove_columns=["text"])
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    meter = TokenMeter(model)

    class Steps(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            meter.step_end()

    on_cuda = device.startswith("cuda")
    args = TrainingArguments(
        output_dir=spec["work_dir"], per_device_train_batch_size=int(spec["batch_size"]),
        gradient_accumulation_steps=1, max_steps=int(spec["steps"]), learning_rate=2e-4,
        lr_scheduler_type="cosine", warmup_steps=min(5, int(spec["steps"]) - 1), max_grad_norm=0.3,
        optim="paged_adamw_8bit" if on_cuda else "adamw_torch", bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16 and on_cuda, use_cpu=not on_cuda,
        logging_steps=1, save_strategy="no", report_to="none", seed=int(spec.get("seed", 42)),
        dataloader_num_workers=0, disable_tqdm=True, gradient_checkpointing=gc,
    )
    trainer = Trainer(model=model, args=args, train_dataset=ds,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False), callbacks=[Steps()])
    t_train = time.perf_counter()
    trainer.train()
    train_wall = time.perf_counter() - t_train
    meter.close()
    summary = meter.summary()
    first_step_from_launch = None
    if t_launch is not None and meter.step_ends:
        first_step_from_launch = time.time() - (time.perf_counter() - meter.step_ends[0][0]) - t_launch
    return {
        "contender": "plain", "bits": bits, "load_seconds": load_seconds, "train_call_seconds": train_wall,
        "first_step_after_train_call_s": meter.step_ends[0][0] - t_train if meter.step_ends else None,
        "first_step_from_launch_s": first_step_from_launch,
        "rows": len(rows), "cutoff_len": cutoff, "longest_row_tokens": max(lengths),
        "mean_row_tokens": sum(lengths) / len(lengths), "rows_truncated": sum(n > cutoff for n in lengths),
        "throughput": summary, "memory": peak_memory(device),
    }


if __name__ == "__main__":
    worker_main(run)
