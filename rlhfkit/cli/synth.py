"""`rlhfkit synth`: the embedded default data (no network, no copied data)."""

from __future__ import annotations

from typing import Optional

import typer

from .common import OUT, SEED, handle_errors


@handle_errors
def synth(
    n: int = typer.Option(1000, "--n", min=1, metavar="N", help="Number of records."),
    noise: float = typer.Option(0.0, "--noise", min=0, max=1, metavar="X", help="Fraction of pair labels flipped (marked noisy: true)."),
    kind: str = typer.Option("pairs", "--kind", metavar="KIND", help="'pairs' or 'rankings'."),
    responses: int = typer.Option(4, "--responses", min=2, metavar="N", help="Responses per ranking record (2-10)."),
    seed: int = SEED,
    out: Optional[str] = OUT,
) -> None:
    """Write synthetic film-review preferences labelled by a hidden gold sentiment score.

    Pairs: {id, prompt, chosen, rejected, gold_chosen, gold_rejected, noisy}. Exactly
    round(noise * n) pairs are flipped. Rankings: {id, prompt, responses, scores, open_ended}.
    """
    from .. import synth as lib
    from ..io import UsageError, summary, write_records

    if kind not in ("pairs", "rankings"):
        raise UsageError(f"--kind must be 'pairs' or 'rankings', got {kind!r}")
    if n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    try:
        records = lib.pairs(n, noise, seed) if kind == "pairs" else lib.rankings(n, responses, seed)
        written = write_records(out, records)
    except ValueError as e:
        raise UsageError(str(e)) from None
    flipped = round(noise * n) if kind == "pairs" else 0
    summary(stage="synth", kind=kind, written=written, flipped=flipped, seed=seed)
