"""`rlhfkit sft`: supervised fine-tuning of a policy on prompt -> response records (TRL's SFTTrainer)."""

from __future__ import annotations

from typing import Optional

import typer

from .common import CHAT_TEMPLATE, FIELDS, SEED, handle_errors, positive, unit_right_open


@handle_errors
def sft(
    data: str = typer.Argument(..., metavar="FILE", help="Generation records {prompt, response}, or pairs (their chosen); '-' for stdin."),
    model: str = typer.Option(..., "--model", metavar="MODEL", help="Starting model: alias (synth-world, tiny-gpt, smollm2-135m), directory or hub id."),
    out: str = typer.Option(..., "--out", "-o", metavar="DIR", help="Output model directory (what ppo --policy, generate and metrics take)."),
    epochs: float = typer.Option(1.0, "--epochs", callback=positive, metavar="X", help="Passes over the records."),
    lr: float = typer.Option(1e-3, "--lr", callback=positive, metavar="X", help="Peak learning rate (AdamW, cosine decay); 1e-3 suits a model trained from scratch, ~2e-5 a pretrained one."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, metavar="N", help="Records per optimizer step."),
    max_length: int = typer.Option(256, "--max-length", min=2, metavar="N", help="Longest prompt + response, in tokens."),
    warmup_ratio: float = typer.Option(0.05, "--warmup-ratio", callback=unit_right_open, metavar="X", help="Share of the steps spent warming the learning rate up."),
    chat_template: Optional[bool] = CHAT_TEMPLATE,
    fields: Optional[str] = FIELDS,
    seed: int = SEED,
) -> None:
    """Fine-tune a causal LM on prompt -> response records; the loss covers the responses only.

    The prompt is rendered as `ppo` and `generate` render it (the chat template when the tokenizer
    has one), so the policy learns exactly the continuation it is later sampled from. Pairs train
    on their chosen response. `rlhfkit synth --kind reviews | rlhfkit sft - --model synth-world`
    builds the synth world's policy.
    """
    from ..io import RecordReader, check_dir_output, field_map, summary
    from ..records import GENERATION, PAIR
    from ..sft import SFTSettings, train_sft

    check_dir_output(out)
    reader = RecordReader(data, kinds=(GENERATION, PAIR), fields=field_map(fields))
    pairs = [(ex.prompt, ex.response if ex.kind == GENERATION else ex.chosen) for ex in reader]
    settings = SFTSettings(model=model, out=out, epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length,
                           warmup_ratio=warmup_ratio, chat_template=chat_template, seed=seed)
    result = train_sft(settings, pairs)
    summary(stage="sft", out=out, **result)
