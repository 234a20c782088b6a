"""`rlhfkit clean`: flip, smooth, re-margin or drop pairs using their strength."""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Optional

import typer

from .common import ON_ERROR, OUT, REJECTS, err_console, handle_errors, open_unit


@handle_errors
def clean(
    data: str = typer.Argument("-", help="Pair records with strength fields (from `rlhfkit strength`); '-' for stdin."),
    flip: bool = typer.Option(False, "--flip", help="Swap chosen and rejected of pairs below --flip-below (or the lowest --flip-fraction)."),
    flip_below: Optional[float] = typer.Option(None, "--flip-below", help="Strength mean under which pairs are flipped (implies --flip; default 0)."),
    flip_fraction: Optional[float] = typer.Option(None, "--flip-fraction", min=0, max=1, help="Flip the lowest fraction of pairs instead (implies --flip; paper: 0.2)."),
    smooth: Optional[float] = typer.Option(None, "--smooth", callback=open_unit, help="Soft label 1-A for pairs below --smooth-below (not flipped)."),
    smooth_below: float = typer.Option(0.0, "--smooth-below"),
    margin: bool = typer.Option(False, "--margin", help="Set margin = scale * max(strength_mean, 0) on every kept pair."),
    margin_scale: float = typer.Option(0.5, "--margin-scale", min=0, help="Keep margins small (the paper's advice)."),
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
    from ..io import (InputError, RecordReader, UsageError, atomic_output, check_distinct_outputs, check_file_output,
                      rereadable, source_name, summary)

    flip = flip or flip_below is not None or flip_fraction is not None  # asking how much to flip asks to flip
    rules = Rules(flip=flip, flip_below=0.0 if flip_below is None else flip_below, flip_fraction=flip_fraction,
                  smooth=smooth, smooth_below=smooth_below, margin=margin, margin_scale=margin_scale,
                  drop_below=drop_below)
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
    check_file_output(out)
    check_file_output(rejects, "--rejects")
    check_distinct_outputs(out=out, rejects=rejects)

    import json

    name = source_name(data)

    def strength_of(ex):
        m = ex.raw.get("strength_mean")
        return m if isinstance(m, (int, float)) and not isinstance(m, bool) else None

    # two passes over the file, so memory holds numbers, not records (stdin is spooled to disk)
    with rereadable(data) as path:
        means, noisy, missing = [], [], 0
        first = RecordReader(path, ("pair",), on_error, on_reject=lambda line: None, name=name)
        for ex in first:
            m = strength_of(ex)
            if m is None:
                if on_error != "skip":
                    raise InputError(name, ex.line, "field 'strength_mean': missing; run `rlhfkit strength` first")
                missing += 1
                continue
            means.append(float(m))
            noisy.append(ex.raw.get("noisy") if isinstance(ex.raw.get("noisy"), bool) else None)
        actions = decide(means, rules)
        with atomic_output(out) as fo, atomic_output(rejects, "wb") if rejects else _nowhere() as fr:
            second = RecordReader(path, ("pair",), on_error, on_reject=fr.write, name=name)
            k = 0
            for ex in second:
                if strength_of(ex) is None:
                    fr.write((json.dumps(ex.output(), ensure_ascii=False) + "\n").encode())
                    continue
                rec = apply(ex.output(), actions[k], rules)
                k += 1
                if rec["clean_action"] == DROP:
                    fr.write((json.dumps(rec, ensure_ascii=False, allow_nan=False) + "\n").encode())
                else:
                    fo.write(json.dumps(rec, ensure_ascii=False, allow_nan=False) + "\n")
        skipped = first.stats.skipped

    counts = Counter(actions)
    from rich.table import Table

    table = Table(title="clean", show_edge=False)
    table.add_column("action")
    table.add_column("pairs", justify="right")
    for a in ("keep", "flip", "smooth", "drop"):
        table.add_row(a, str(counts.get(a, 0)))
    table.add_row("skipped (bad input or no strength)", str(skipped + missing))
    err_console.print(table)
    info = {"actions": dict(counts), "skipped": skipped + missing}
    if means and all(v is not None for v in noisy):
        info["flip_quality"] = flip_quality(actions, noisy)
        q = info["flip_quality"]
        err_console.print(f"flips vs injected noise: precision {q['precision']:.3f}, recall {q['recall']:.3f}")
    summary(stage="clean", **info)


class _Discard:
    def write(self, _data) -> None:
        pass


@contextmanager
def _nowhere():
    """A sink for rejects when none was asked for (only --on-error skip without --rejects reaches it)."""
    yield _Discard()
