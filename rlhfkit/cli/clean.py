"""`rlhfkit clean`: flip, smooth, re-margin or drop pairs using their strength."""

from __future__ import annotations

from collections import Counter
from typing import Optional

import typer

from .common import ON_ERROR, OUT, REJECTS, err_console, handle_errors


@handle_errors
def clean(
    data: str = typer.Argument("-", help="Pair records with strength fields (from `rlhfkit strength`); '-' for stdin."),
    flip: bool = typer.Option(False, "--flip", help="Swap chosen and rejected of pairs below --flip-below (or the lowest --flip-fraction)."),
    flip_below: Optional[float] = typer.Option(None, "--flip-below", help="Strength mean under which pairs are flipped (implies --flip; default 0)."),
    flip_fraction: Optional[float] = typer.Option(None, "--flip-fraction", help="Flip the lowest fraction of pairs instead (implies --flip; paper: 0.2)."),
    smooth: Optional[float] = typer.Option(None, "--smooth", help="Soft label 1-A for pairs below --smooth-below (not flipped)."),
    smooth_below: float = typer.Option(0.0, "--smooth-below"),
    margin: bool = typer.Option(False, "--margin", help="Set margin = scale * max(strength_mean, 0) on every kept pair."),
    margin_scale: float = typer.Option(0.5, "--margin-scale", help="Keep margins small (the paper's advice)."),
    drop_below: Optional[float] = typer.Option(None, "--drop-below", help="Drop pairs whose strength mean is below T (needs --rejects)."),
    drop_ambiguous: Optional[str] = typer.Option(None, "--drop-ambiguous", help="Drop pairs with LO <= mean <= HI, as LO:HI (needs --rejects)."),
    out: Optional[str] = OUT,
    on_error: str = ON_ERROR,
    rejects: Optional[str] = REJECTS,
) -> None:
    """Clean noisy preference pairs using their strength.

    Each pair gets `clean_action` (keep, flip, smooth or drop; drop > flip > smooth > keep);
    flipped pairs have chosen/rejected swapped and their strength negated, smoothed pairs get a
    `label`, --margin sets `margin`. Dropped pairs go to --rejects, with bad lines when
    --on-error skip. Counts per action are printed on stderr.
    """
    from ..clean import DROP, Rules, apply, decide, flip_quality
    from ..io import InputError, UsageError, atomic_output, read_records, source_name, summary, write_records

    flip = flip or flip_below is not None or flip_fraction is not None  # asking how much to flip asks to flip
    rules = Rules(flip=flip, flip_below=0.0 if flip_below is None else flip_below, flip_fraction=flip_fraction, smooth=smooth, smooth_below=smooth_below,
                  margin=margin, margin_scale=margin_scale, drop_below=drop_below)
    if drop_ambiguous is not None:
        try:
            lo, hi = (float(x) for x in drop_ambiguous.split(":"))
        except ValueError:
            raise UsageError(f"--drop-ambiguous must be LO:HI, got {drop_ambiguous!r}") from None
        rules.drop_ambiguous = (lo, hi)
    if (rules.drop_below is not None or rules.drop_ambiguous) and not rejects:
        raise UsageError("dropping pairs needs --rejects FILE, so that none is lost")
    if flip_fraction is not None and not 0 <= flip_fraction <= 1:
        raise UsageError(f"--flip-fraction must lie in [0, 1], got {flip_fraction}")
    if smooth is not None and not 0 < smooth < 1:
        raise UsageError(f"--smooth must lie in (0, 1), got {smooth}")

    import json

    examples, stats = read_records(data, ("pair",), on_error)
    kept, missing = [], []
    for ex in examples:
        m = ex.raw.get("strength_mean")
        if isinstance(m, (int, float)) and not isinstance(m, bool):
            kept.append(ex)
        elif on_error == "skip":
            missing.append(ex)
        else:
            raise InputError(source_name(data), ex.line, "field 'strength_mean': missing; run `rlhfkit strength` first")
    actions = decide([ex.raw["strength_mean"] for ex in kept], rules)
    cleaned = [apply(ex.output(), a, rules) for ex, a in zip(kept, actions)]
    if rejects:
        with atomic_output(rejects, "wb") as fh:
            fh.write(b"".join(stats.rejected_lines))
            for ex in missing:
                fh.write((json.dumps(ex.output(), ensure_ascii=False) + "\n").encode())
            for rec in cleaned:
                if rec["clean_action"] == DROP:
                    fh.write((json.dumps(rec, ensure_ascii=False) + "\n").encode())
    write_records(out, (r for r in cleaned if r["clean_action"] != DROP))

    counts = Counter(actions)
    from rich.table import Table

    table = Table(title="clean", show_edge=False)
    table.add_column("action")
    table.add_column("pairs", justify="right")
    for a in ("keep", "flip", "smooth", "drop"):
        table.add_row(a, str(counts.get(a, 0)))
    table.add_row("skipped (bad input or no strength)", str(stats.skipped + len(missing)))
    err_console.print(table)
    info = {"actions": dict(counts), "skipped": stats.skipped + len(missing)}
    if kept and all("noisy" in ex.raw for ex in kept):
        info["flip_quality"] = flip_quality(actions, [bool(ex.raw["noisy"]) for ex in kept])
        q = info["flip_quality"]
        err_console.print(f"flips vs injected noise: precision {q['precision']:.3f}, recall {q['recall']:.3f}")
    summary(stage="clean", **info)
