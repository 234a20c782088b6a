"""`rlhfkit report`: a paper recipe's last stage, its headline table from the run's own outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .common import OUT, err_console, handle_errors


@handle_errors
def report(
    paper: str = typer.Argument(..., metavar="PAPER", help="secrets-rm, metarm, uncertainty, pm-rlhf or reward-collapse."),
    run_dir: str = typer.Argument(..., metavar="DIR", help="The recipe's OUT directory."),
    scale: str = typer.Option("full", "--scale", metavar="full|tiny", help="The recipe's SCALE, printed with the table (tiny numbers are not evidence)."),
    out: Optional[str] = OUT,
) -> None:
    """Read a paper recipe's outputs (metrics JSON, judgements, strength) into the paper's headline
    quantities, each beside the paper's number and whether this run points the same way; writes the
    summary JSON to --out (or stdout) and prints the table on stderr. Numbers come from the files the
    recipe's `metrics`, `judge` and `strength` stages wrote; a missing file is an error naming it."""
    from rich.console import Console
    from rich.table import Table

    from ..io import UsageError, atomic_output, check_file_output
    from ..report import PAPERS, summarise

    if paper not in PAPERS:
        raise UsageError(f"PAPER must be one of {', '.join(PAPERS)}, got {paper!r}")
    if scale not in ("full", "tiny"):
        raise UsageError(f"--scale must be full or tiny, got {scale!r}")
    check_file_output(out)
    if not Path(run_dir).is_dir():
        raise UsageError(f"{run_dir}: no such run directory")
    summary = summarise(paper, Path(run_dir), scale)
    table = Table(title=f"{summary['title']} — {scale} scale, {run_dir}", show_edge=False)
    for col in ("quantity", "this run", "paper", "same direction"):
        table.add_column(col, justify="left" if col in ("quantity", "paper") else "right")
    for r in summary["rows"]:
        value = f"{r['run']:.4g}" if isinstance(r["run"], float) else str(r["run"])
        agrees = {None: "", True: "yes", False: "no"}[r["same_direction"]]
        table.add_row(r["quantity"], value, r["paper"], agrees)
    console = err_console if err_console.is_terminal else Console(stderr=True, width=140)  # a log keeps whole rows
    console.print(table)
    console.print(f"same direction as the paper: {summary['same_direction']} checked rows. {summary['note']}")
    with atomic_output(out, "w") as fh:  # stdout when no --out
        fh.write(json.dumps(summary, ensure_ascii=False, indent=1) + "\n")
