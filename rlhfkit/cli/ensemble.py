"""`rlhfkit ensemble`: K reward heads on a frozen backbone, or an ensemble of trained reward models."""

from __future__ import annotations

from typing import List, Optional

import typer

from .common import FIELDS, ON_ERROR, REJECTS, SEED, handle_errors, positive


@handle_errors
def ensemble(
    data: Optional[str] = typer.Argument(None, metavar="FILE", help="Pair records to train the heads on ('-' for stdin); not with --members."),
    out: str = typer.Option(..., "--out", "-o", metavar="PATH", help="Ensemble directory (heads.safetensors + rlhfkit.json)."),
    model: str = typer.Option("minilm", "--model", metavar="MODEL", help="Frozen backbone: alias, directory or hub id."),
    from_rm: Optional[str] = typer.Option(None, "--from-rm", metavar="DIR", help="Use a trained reward model's backbone (two-stage recipe)."),
    members: Optional[List[str]] = typer.Option(None, "--members", metavar="DIR", help="Reward-model directories to combine instead (repeat the flag)."),
    heads: int = typer.Option(10, "--heads", min=1, metavar="N", help="Number of heads K."),
    epochs: int = typer.Option(3, "--epochs", min=1, metavar="N", help="Passes over the data."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, metavar="N", help="Pairs per head per step."),
    lr: float = typer.Option(1e-3, "--lr", callback=positive, metavar="X", help="Learning rate (AdamW)."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", min=0, metavar="X", help="AdamW weight decay."),
    bootstrap: bool = typer.Option(False, "--bootstrap", min=1, help="Each head trains on its own resample of the data."),
    pooling: Optional[str] = typer.Option(None, "--pooling", metavar="mean|cls|last|head", help="mean, cls or last (default: mean for encoders, last for decoders, cls with --from-rm encoders)."),
    max_length: int = typer.Option(512, "--max-length", min=1, metavar="N", help="Tokens per text (truncated from the left)."),
    cache: Optional[str] = typer.Option(None, "--cache", metavar="FILE", help="Directory to cache backbone features on disk (default: memory only)."),
    seed: int = SEED,
    on_error: str = ON_ERROR,
    rejects: Optional[str] = REJECTS,
    fields: Optional[str] = FIELDS,
) -> None:
    """Build a reward ensemble.

    Default: run the frozen backbone once per text, cache the pooled features, and train K
    linear heads with the summed Bradley-Terry loss, each head its own initialisation and data
    order. With --members, combine independently trained reward models (Secrets II) instead.
    Score with `rlhfkit score DATA --reward DIR` (adds rewards, reward_mean, reward_std).
    """
    from ..cleaning.ensemble import HeadTraining, build_ensemble, save_members
    from ..io import UsageError, read_records, summary

    from ..io import check_dir_output, check_file_output, field_map

    check_dir_output(out)
    check_file_output(rejects, "--rejects")
    if members:
        if data is not None:
            raise UsageError("give either DATA (train heads) or --members (combine reward models), not both")
        save_members(out, members)
        summary(stage="ensemble", out=out, members=len(members))
        return
    if data is None:
        raise UsageError("missing DATA: pair records to train the heads on (or use --members)")
    examples, stats = read_records(data, ("pair",), on_error, rejects, field_map(fields))
    cfg = HeadTraining(heads=heads, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                       bootstrap=bootstrap, seed=seed)
    result, _ = build_ensemble(examples, out, model, cfg, from_rm, pooling, max_length, cache)
    summary(stage="ensemble", out=out, records=stats.read, skipped=stats.skipped, **stats.counts(), **result)
