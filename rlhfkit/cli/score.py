"""`rlhfkit score`: add rewards to records with a reward model or ensemble directory."""

from __future__ import annotations

from typing import Optional

import typer

from .common import DTYPE, FIELDS, ON_ERROR, OUT, REJECTS, handle_errors


@handle_errors
def score(
    data: str = typer.Argument("-", metavar="FILE", help="Generation, pair or ranking records; '-' for stdin."),
    reward: str = typer.Option(..., "--reward", metavar="DIR|FN", help="Reward-model or ensemble directory."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, metavar="N", help="Texts (or prompts) per forward pass; memory grows with it."),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=1, metavar="N", help="Tokens per text (default: what the reward model or ensemble was trained with)."),
    dtype: str = DTYPE,
    out: Optional[str] = OUT,
    on_error: str = ON_ERROR,
    rejects: Optional[str] = REJECTS,
    fields: Optional[str] = FIELDS,
) -> None:
    """Add rewards to records.

    Generation records get `reward`; pairs get `reward_chosen` and `reward_rejected`; rankings
    get `response_rewards` (in the record's own order). With an ensemble, every reward is the
    heads' mean, and the per-head lists and spread are added: `rewards`, `reward_mean`,
    `reward_std` (pairs: the same names suffixed _chosen/_rejected).
    """
    from ..io import read_records, summary, write_records
    from ..cleaning.scoring import load_scorer, score_examples

    from ..io import check_distinct_outputs, check_file_output, field_map

    check_file_output(out)
    check_file_output(rejects, "--rejects")
    check_distinct_outputs(out=out, rejects=rejects)
    examples, stats = read_records(data, ("generation", "pair", "ranking"), on_error, rejects, field_map(fields))
    scorer = load_scorer(reward, max_length=max_length, dtype=dtype, one_at_a_time=True)
    records = score_examples(scorer, examples, batch_size)
    write_records(out, records)
    summary(stage="score", reward=reward, dtype=dtype, heads=scorer.heads, records=len(records), skipped=stats.skipped,
            **stats.counts())
