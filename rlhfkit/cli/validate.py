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
    from ..io import RecordReader, summary, write_bytes_atomic, write_records

    reader = RecordReader(data, on_error=on_error)  # streams: memory stays flat however long the file
    kinds: Counter = Counter()

    def checked():
        for ex in reader:
            kinds[ex.kind] += 1
            yield ex.output()

    write_records(out, checked())
    if rejects:
        write_bytes_atomic(rejects, b"".join(reader.stats.rejected_lines))
    summary(stage="validate", read=reader.stats.read, skipped=reader.stats.skipped, kinds=dict(kinds))
