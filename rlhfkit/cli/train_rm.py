"""`rlhfkit train-rm`: train a reward model on pair or ranking records."""

from __future__ import annotations

from typing import Optional

import typer

from .common import CONFIG, FIELDS, ON_ERROR, REJECTS, SEED, apply_config, below_half, handle_errors, positive, unit_right_open


@handle_errors
def train_rm(
    ctx: typer.Context,
    data: str = typer.Argument(..., metavar="FILE", help="Pair records (--loss bt) or ranking records (--loss ranking); '-' for stdin."),
    model: str = typer.Option("minilm", "--model", metavar="MODEL", help="Base model: alias, directory or hub id."),
    out: str = typer.Option(..., "--out", "-o", metavar="PATH", help="Output directory (model, tokenizer, rlhfkit.json, log.jsonl, checkpoints/)."),
    loss: str = typer.Option("bt", "--loss", metavar="bt|ranking", help="bt (pairs; uses 'margin' and 'label' fields) or ranking."),
    margin_scale: float = typer.Option(1.0, "--margin-scale", min=0, metavar="X", help="Multiplies each record's 'margin' (0 disables margins)."),
    label_smoothing: float = typer.Option(0.0, "--label-smoothing", callback=below_half, metavar="X", help="Soft label p -> p(1-a) + (1-p)a for every pair."),
    noise_rate: float = typer.Option(0.0, "--noise-rate", callback=below_half, metavar="EPS", help="Train through label noise: labels flipped at random with rate EPS (`clean` prints the expected rate left after cleaning); --noise-loss picks the loss."),
    noise_loss: str = typer.Option("forward", "--noise-loss", metavar="forward|unbiased", help="With --noise-rate: forward (the likelihood of the label through a noisy annotator, bounded; margins apply) or unbiased (Provably Robust DPO; margins not used)."),
    utility: str = typer.Option("x", "--utility", metavar="x|log|x_inv|logsigmoid|adaptive", help="Ranking utility: x, log, x_inv, logsigmoid or adaptive."),
    open_utility: str = typer.Option("x_inv", "--open-utility", metavar="UTILITY", help="adaptive: utility for open-ended prompts."),
    closed_utility: str = typer.Option("x", "--closed-utility", metavar="UTILITY", help="adaptive: utility for closed-ended prompts."),
    max_pairs: int = typer.Option(45, "--max-pairs", min=1, metavar="N", help="Ranking: at most this many pairs sampled per prompt."),
    contrastive: Optional[str] = typer.Option(None, "--contrastive", metavar="simcse|swav", help="Add a contrastive loss: simcse or swav."),
    contrastive_weight: Optional[float] = typer.Option(None, "--contrastive-weight", min=0, metavar="X", help="beta (default: paper's, 1 / 0.5 / 0.1)."),
    contrastive_features: str = typer.Option("diff", "--contrastive-features", metavar="pair|diff", help="pair ({f_c, f_r}) or diff ({f_c-f_r, f_r-f_c})."),
    contrastive_temperature: Optional[float] = typer.Option(None, "--contrastive-temperature", callback=positive, metavar="X", help="tau (default 0.05 SimCSE, 0.1 SwAV)."),
    prototypes: Optional[int] = typer.Option(None, "--prototypes", min=1, metavar="N", help="SwAV prototypes K (default 20 diff / 50 pair)."),
    dropout: Optional[float] = typer.Option(None, "--dropout", callback=unit_right_open, metavar="X", help="Dropout during training (default 0; 0.05 with --contrastive)."),
    meta_data: Optional[str] = typer.Option(None, "--meta-data", metavar="FILE", help="MetaRM: {prompt, responses: [k>=2 policy samples]} records."),
    meta_lr: float = typer.Option(1e-5, "--meta-lr", min=0, metavar="X", help="MetaRM inner ascent step size eta."),
    meta_batch_size: int = typer.Option(4, "--meta-batch-size", min=1, metavar="N", help="MetaRM prompts per meta batch."),
    freeze_backbone: bool = typer.Option(False, "--freeze-backbone", help="Train the reward head only."),
    early_stop_loss: Optional[float] = typer.Option(None, "--early-stop-loss", metavar="X", help="Stop once a logging window's mean loss is at most this."),
    epochs: float = typer.Option(1.0, "--epochs", callback=positive, metavar="X", help="Passes over the data."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, metavar="N", help="Optimizer steps (overrides --epochs)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, metavar="N", help="Pairs (or ranking records) per micro-batch."),
    grad_accum: int = typer.Option(1, "--grad-accum", min=1, metavar="N", help="Micro-batches per optimizer step (gradient accumulation)."),
    lr: float = typer.Option(1e-5, "--lr", callback=positive, metavar="X", help="Learning rate (AdamW)."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", min=0, metavar="X", help="AdamW weight decay."),
    warmup_ratio: float = typer.Option(0.03, "--warmup-ratio", min=0, max=1, metavar="X", help="Fraction of the steps spent warming the learning rate up from 0."),
    scheduler: str = typer.Option("cosine", "--scheduler", metavar="NAME", help="cosine, linear or constant_with_warmup."),
    max_length: int = typer.Option(512, "--max-length", min=1, metavar="N", help="Tokens per sequence (truncated from the left)."),
    group_by_length: bool = typer.Option(False, "--group-by-length", help="Batch sequences of similar length together."),
    eval: Optional[str] = typer.Option(None, "--eval", metavar="FILE", help="Held-out records for accuracy (at the end and every --eval-steps)."),
    eval_steps: Optional[int] = typer.Option(None, "--eval-steps", min=1, metavar="N", help="With --eval: also evaluate every N optimizer steps."),
    logging_steps: int = typer.Option(10, "--logging-steps", min=1, metavar="N", help="Append loss/accuracy/margin to log.jsonl every N steps."),
    save_steps: int = typer.Option(200, "--save-steps", min=0, metavar="N", help="Checkpoint every N steps (0: never)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in --out."),
    lora: bool = typer.Option(False, "--lora", help="Train LoRA adapters (peft) plus the head; merged on save."),
    lora_r: int = typer.Option(8, "--lora-r", min=1, metavar="N", help="--lora: adapter rank."),
    lora_alpha: int = typer.Option(16, "--lora-alpha", min=1, metavar="N", help="--lora: adapter scaling alpha (the update is scaled by alpha / r)."),
    dtype: str = typer.Option("auto", "--dtype", metavar="auto|fp32|bf16|fp16", help="auto (fp32 on CPU, bf16 on capable GPUs), fp32, bf16, fp16."),
    seed: int = SEED,
    on_error: str = ON_ERROR,
    rejects: Optional[str] = REJECTS,
    fields: Optional[str] = FIELDS,
    config: Optional[str] = CONFIG,
) -> None:
    """Train a reward model and write a model directory.

    Reads pair records (Bradley-Terry; a record's `margin` goes inside the sigmoid, its `label`
    is a soft label) or ranking records (--loss ranking, Reward Collapse utilities). Writes an
    AutoModelForSequenceClassification directory (safetensors, tokenizer, rlhfkit.json),
    log.jsonl and checkpoints/ to --out.
    """
    from ..io import read_records, summary, write_bytes_atomic
    from ..rewards.train import TrainConfig, check_config, train_reward_model

    from ..io import check_dir_output, check_file_output, field_map

    values = apply_config(ctx, config, dict(locals()))
    check_dir_output(values["out"])
    check_file_output(values["rejects"], "--rejects")
    fields = set(TrainConfig.__dataclass_fields__)
    cfg = TrainConfig(**{k: v for k, v in values.items() if k in fields})
    check_config(cfg)
    kinds = ("pair",) if cfg.loss == "bt" else ("ranking",)
    fmap = field_map(values["fields"])
    examples, stats = read_records(values["data"], kinds, values["on_error"], fields=fmap)
    if cfg.loss == "ranking":  # a ranking whose scores all tie orders nothing: it cannot be trained on
        examples = drop_untrainable_rankings(examples, values["data"], values["on_error"], stats)
    if values["rejects"]:
        write_bytes_atomic(values["rejects"], b"".join(stats.rejected_lines))
    # a map of its own: its match counts and notes are about the --eval file alone
    eval_examples = read_records(values["eval"], kinds, fields=field_map(values["fields"]))[0] if values["eval"] else None
    meta_examples = read_records(values["meta_data"], ("ranking",))[0] if values["meta_data"] else None
    result = train_reward_model(cfg, examples, source=values["data"], eval_examples=eval_examples,
                                meta_examples=meta_examples)
    summary(stage="train-rm", out=cfg.out, records=stats.read, skipped=stats.skipped, **stats.counts(), **result)


def drop_untrainable_rankings(examples, source: str, on_error: str, stats):
    """Rankings with no ordered pair (every score tied): an error at FILE:LINE, or skipped and counted."""
    import json

    from ..io import InputError, source_name
    from ..records import ranking_pairs

    kept = []
    for ex in examples:
        if ranking_pairs(ex):
            kept.append(ex)
        elif on_error == "stop":
            raise InputError(source_name(source), ex.line,
                             "field 'scores': every score ties, so the ranking orders no pair to train on")
        else:
            stats.skipped += 1
            stats.rejected_lines.append((json.dumps(ex.raw, ensure_ascii=False) + "\n").encode())
    if not kept:
        raise InputError(source_name(source), None, "no ranking with at least two different scores")
    return kept
