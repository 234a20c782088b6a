"""Supervised fine-tuning of a policy on prompt -> response records, through TRL's SFTTrainer.

The prompt is rendered exactly as ``ppo`` and ``generate`` render it (the chat template when the
tokenizer has one), so the policy learns to continue the text it will later be asked to continue;
the loss covers the response and its EOS only (TRL's completion-only loss).
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence


@dataclass
class SFTSettings:
    model: str
    out: str
    epochs: float = 1.0
    lr: float = 1e-3
    batch_size: int = 32
    max_length: int = 256
    warmup_ratio: float = 0.05
    chat_template: bool | None = None
    seed: int = 0


def sft_rows(tokenizer, pairs: Sequence[tuple[Any, str]], chat_template: bool | None = None) -> list[dict]:
    """TRL prompt-completion rows from (prompt, response) pairs."""
    from .ppo.policy import render_prompt
    from .rewards.model import render

    rows = []
    for prompt, response in pairs:
        text = render_prompt(tokenizer, prompt, chat_template)
        # the reward model's joining rule: a newline between prompt and response unless either has whitespace
        rows.append({"prompt": text, "completion": render(tokenizer, text, response)[len(text):]})
    return rows


def train_sft(settings: SFTSettings, pairs: Sequence[tuple[Any, str]], progress: bool = True) -> dict:
    """Fine-tune ``settings.model`` on the pairs and save an ordinary model directory at ``settings.out``."""
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from .dist import deepspeed_logs_to_stderr
    from .io import scratch_dir
    from .models import load_model, load_tokenizer, write_meta
    from .progress import task_progress

    if os.environ.get("RLHFKIT_VERBOSE") != "1":
        import datasets

        datasets.disable_progress_bars()  # rlhfkit's own bar reports the training
    torch.manual_seed(settings.seed)
    tokenizer = load_tokenizer(settings.model)
    model = load_model(settings.model, "causal-lm", dtype=torch.float32)
    rows = sft_rows(tokenizer, pairs, settings.chat_template)
    steps = math.ceil(len(rows) / settings.batch_size) * settings.epochs

    with scratch_dir("sft") as scratch, task_progress("sft", int(math.ceil(steps)), enabled=progress) as advance:
        class Progress(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    self.loss = logs["loss"]

            def on_step_end(self, args, state, control, **kwargs):
                advance(1, loss=getattr(self, "loss", float("nan")))

        deepspeed_logs_to_stderr()  # TRL builds an Accelerator: DeepSpeed would print to stdout
        config = SFTConfig(
            output_dir=scratch, num_train_epochs=settings.epochs, learning_rate=settings.lr,
            per_device_train_batch_size=settings.batch_size, warmup_steps=settings.warmup_ratio,  # a float < 1: a share
            lr_scheduler_type="cosine", max_length=settings.max_length, seed=settings.seed, data_seed=settings.seed,
            logging_steps=10, save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
            completion_only_loss=True, dataset_num_proc=None,
        )
        trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer, callbacks=[Progress()])
        trainer.remove_callback(PrinterCallback)  # its log dicts would land on stdout, which carries records
        result = trainer.train()
    model = trainer.model
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out = Path(settings.out)  # written whole into a temporary folder first: an interrupted save leaves no half model
    tmp = out / ".sft-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_meta(str(tmp), {"stage": "sft", "base": settings.model, "records": len(rows),
                          "epochs": settings.epochs, "lr": settings.lr, "seed": settings.seed})
    for f in tmp.iterdir():
        os.replace(f, out / f.name)
    tmp.rmdir()
    return {"records": len(rows), "steps": result.global_step, "train_loss": result.training_loss}
