"""`rlhfkit validate`: check a file against the record contract before a long run."""

from __future__ import annotations

from collections import Counter
from typing import Optional

import typer

from .common import ON_ERROR, OUT, REJECTS, handle_errors


@handle_errors
def validate(
    data: str = typer.Argument("-", help="JSONL(.gz) path, '-' for stdin, or hf:NAME[:CONFIG]:SPLIT."),
    out: Optional[str] = OUT,
    on_error: str = ON_ERROR,
    rejects: Optional[str] = REJECTS,
) -> None:
    """Check records against the contract and write them back with a stable id.

    Reads pair, ranking, generation or prompt records; writes them unchanged plus `id` where a
    record had none; counts per kind go to the summary line.
    """
    from ..io import read_records, summary, write_records

    examples, stats = read_records(data, on_error=on_error, rejects=rejects)
    write_records(out, (ex.output() for ex in examples))
    kinds = Counter(ex.kind for ex in examples)
    summary(stage="validate", read=stats.read, skipped=stats.skipped, kinds=dict(kinds))
