"""The GPU reference where Unsloth installs: its 4-bit loader and LoRA patching, same data, batch and steps.

Only used with ``--device cuda`` when ``import unsloth`` works (Unsloth needs
a CUDA GPU); on CPU the plain recipe is the only reference. Rows are padded
per batch (``DataCollatorForSeq2Seq``) with full-sequence loss, as Unsloth's
own notebooks train by default without packing.
"""

from __future__ import annotations

import time
from typing import Any

from common import TokenMeter, peak_memory, read_rows, worker_main
from plain_recipe import render_texts


def run(spec: dict[str, Any]) -> dict[str, Any]:
    import unsloth  # noqa: F401 - must be imported before transformers to patch it
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments
    from unsloth import FastLanguageModel

    t0 = time.perf_counter()
    cutoff = int(spec["cutoff_len"])
    model, tokenizer = FastLanguageModel.from_pretrained(spec["model_path"], max_seq_length=cutoff,
                                                         load_in_4bit=True, dtype=None)
    model = FastLanguageModel.get_peft_model(
        model, r=16, lora_alpha=32, lora_dropout=0.05, bias="none",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        use_gradient_checkpointing=bool(spec.get("gradient_checkpointing", False)))
    load_seconds = time.perf_counter() - t0
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    texts = render_texts(read_rows(spec["data"]), tokenizer, spec.get("template"))

    def tok(b):
        enc = tokenizer(b["text"], truncation=True, max_length=cutoff)
        enc["labels"] = [list(ids) for ids in enc["input_ids"]]
        return enc

    ds = Dataset.from_dict({"text": texts}).map(tok, batched=True, remove_columns=["text"])
    meter = TokenMeter(model)

    class Steps(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            meter.step_end()

    args = TrainingArguments(
        output_dir=spec["work_dir"], per_device_train_batch_size=int(spec["batch_size"]), max_steps=int(spec["steps"]),
        learning_rate=2e-4, lr_scheduler_type="cosine", warmup_steps=min(5, int(spec["steps"]) - 1),
        max_grad_norm=0.3, optim="paged_adamw_8bit", bf16=True, logging_steps=1, save_strategy="no",
        report_to="none", seed=int(spec.get("seed", 42)), disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[Steps()],
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True))
    t_train = time.perf_counter()
    trainer.train()
    train_wall = time.perf_counter() - t_train
    meter.close()
    return {"contender": "unsloth", "bits": 4, "load_seconds": load_seconds, "train_call_seconds": train_wall,
            "first_step_after_train_call_s": meter.step_ends[0][0] - t_train if meter.step_ends else None,
            "throughput": meter.summary(), "memory": peak_memory(spec.get("device", "cuda"))}


if __name__ == "__main__":
    worker_main(run)
