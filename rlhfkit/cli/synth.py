"""`rlhfkit synth`: the embedded default data (no network, no copied data)."""

from __future__ import annotations

from typing import Optional

import typer

from .common import OUT, SEED, handle_errors


@handle_errors
def synth(
    n: int = typer.Option(1000, "--n", min=1, metavar="N", help="Number of records."),
    noise: float = typer.Option(0.0, "--noise", min=0, max=1, metavar="X", help="Fraction of pair labels flipped (marked noisy: true)."),
    kind: str = typer.Option("pairs", "--kind", metavar="KIND", help="'pairs', 'rankings' or 'reviews' (prompt -> review records: SFT data for the world's policy)."),
    positive_share: float = typer.Option(0.5, "--positive-share", min=0, max=1, metavar="X", help="reviews: chance that a clause is positive (0.5: synth's own mix; lower: a negatively biased reference)."),
    responses: int = typer.Option(4, "--responses", min=2, metavar="N", help="Responses per ranking record (2-10)."),
    seed: int = SEED,
    out: Optional[str] = OUT,
) -> None:
    """Write synthetic film-review preferences labelled by a hidden gold sentiment score.

    Pairs: {id, prompt, chosen, rejected, gold_chosen, gold_rejected, noisy}. Exactly
    round(noise * n) pairs are flipped. Rankings: {id, prompt, responses, scores, open_ended}.
    Reviews: {id, prompt, response, gold}, the SFT data of the world's policy
    (`rlhfkit synth --kind reviews --n 20000 | rlhfkit sft - --model synth-world --out world`);
    `ppo --reward rlhfkit.synth:gold` optimises the gold reward itself.
    """
    from .. import synth as lib
    from ..io import UsageError, summary, write_records

    if kind not in ("pairs", "rankings", "reviews"):
        raise UsageError(f"--kind must be 'pairs', 'rankings' or 'reviews', got {kind!r}")
    if n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    try:
        records = (lib.pairs(n, noise, seed) if kind == "pairs" else lib.rankings(n, responses, seed) if kind == "rankings"
                   else lib.reviews(n, seed, positive_share))
        written = write_records(out, records)
    except ValueError as e:
        raise UsageError(str(e)) from None
    flipped = round(noise * n) if kind == "pairs" else 0
    summary(stage="synth", kind=kind, written=written, flipped=flipped, seed=seed)
