"""`rlhfkit validate`: check a file against the record contract before a long run."""

from __future__ import annotations

from collections import Counter
from contextlib import nullcontext
from typing import Optional

import typer

from .common import FIELDS, ON_ERROR, OUT, REJECTS, handle_errors


@handle_errors
def validate(
    data: str = typer.Argument("-", metavar="FILE", help="JSONL(.gz) path, '-' for stdin, or hf:NAME[:CONFIG]:SPLIT."),
    out: Optional[str] = OUT,
    on_error: str = ON_ERROR,
    rejects: Optional[str] = REJECTS,
    fields: Optional[str] = FIELDS,
) -> None:
    """Check records against the contract and write them back with a stable id.

    Reads pair, ranking, generation or prompt records; writes them unchanged plus `id` where a
    record had none; counts per kind go to the summary line.
    """
    from ..io import RecordReader, field_map, atomic_output, check_distinct_outputs, check_file_output, summary, write_records

    check_file_output(out)
    check_file_output(rejects, "--rejects")
    check_distinct_outputs(out=out, rejects=rejects)
    kinds: Counter = Counter()
    # streams: memory stays flat however long the file, for the records and for the rejected lines
    with atomic_output(rejects, "wb") if rejects else nullcontext(None) as rejected:
        reader = RecordReader(data, on_error=on_error, on_reject=rejected.write if rejected else (lambda line: None),
                              fields=field_map(fields))

        def checked():
            for ex in reader:
                kinds[ex.kind] += 1
                yield ex.output()

        write_records(out, checked())
    summary(stage="validate", read=reader.stats.read, skipped=reader.stats.skipped, kinds=dict(kinds),
            **reader.stats.counts())
