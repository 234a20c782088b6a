"""`rlhfkit clean`: flip, smooth, re-margin or drop pairs using their strength."""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Optional

import typer

from ..cleaning.clean import CONFIDENCE

from .common import FIELDS, ON_ERROR, OUT, below_half, err_console, handle_errors, open_unit


@handle_errors
def clean(
    data: str = typer.Argument("-", metavar="FILE", help="Pair records with strength fields (from `rlhfkit strength`); '-' for stdin."),
    flip: bool = typer.Option(False, "--flip", help="Swap chosen and rejected of the pairs whose label is confidently wrong: P(label wrong) >= --confidence and every member against the label (or use --flip-below / --flip-fraction)."),
    confidence: float = typer.Option(CONFIDENCE, "--confidence", callback=open_unit, metavar="P", help="The confident rule's threshold on the calibrated P(label wrong)."),
    flip_below: Optional[float] = typer.Option(None, "--flip-below", metavar="X", help="Flip pairs whose strength mean is below X instead (implies --flip; the paper: 0)."),
    flip_fraction: Optional[float] = typer.Option(None, "--flip-fraction", min=0, max=1, metavar="X", help="Flip the lowest fraction of pairs instead (implies --flip; the paper: 0.2)."),
    noise_rate: Optional[float] = typer.Option(None, "--noise-rate", callback=below_half, metavar="EPS", help="The rate at which labels are wrong, when you know it (you injected the noise, or annotator studies say): used instead of the estimate, whose guards it skips; P(label wrong) is then calibrated even for weak members."),
    drop_wrong: bool = typer.Option(False, "--drop-wrong", help="Drop (to --rejects) the pairs the flip rule picks instead of flipping them."),
    drop_uncertain: Optional[float] = typer.Option(None, "--drop-uncertain", callback=open_unit, metavar="P", help="Drop (to --rejects) pairs with P <= P(label wrong) < --confidence."),
    soft: bool = typer.Option(False, "--soft", help="Set label = P(the pair as written is right) on every kept pair (train-rm's soft-label loss reads it)."),
    smooth: Optional[float] = typer.Option(None, "--smooth", callback=open_unit, metavar="X", help="Soft label 1-A for pairs below --smooth-below (not flipped)."),
    smooth_below: float = typer.Option(0.0, "--smooth-below", metavar="X", help="--smooth applies to pairs whose strength mean is below this."),
    margin: bool = typer.Option(False, "--margin", help="Set margin = scale * max(strength_mean, 0) on every kept pair."),
    margin_scale: float = typer.Option(0.5, "--margin-scale", min=0, metavar="X", help="Keep margins small (the paper's advice)."),
    drop_below: Optional[float] = typer.Option(None, "--drop-below", metavar="X", help="Drop pairs whose strength mean is below X (needs --rejects)."),
    drop_ambiguous: Optional[str] = typer.Option(None, "--drop-ambiguous", metavar="LO:HI", help="Drop pairs with LO <= mean <= HI, as LO:HI (needs --rejects)."),
    out: Optional[str] = OUT,
    on_error: str = ON_ERROR,
    rejects: Optional[str] = typer.Option(None, "--rejects", metavar="FILE", help="Write the dropped pairs here (required when dropping), and bad lines with --on-error skip."),
    fields: Optional[str] = FIELDS,
) -> None:
    """Clean noisy preference pairs using their strength.

    The default rule (--flip alone) flips only confident errors: from all pairs' strength means,
    rlhfkit estimates the noise rate (the share of disagreeing labels among the most confident
    half) and a calibrated P(label wrong) per pair (noise-corrected isotonic fit; see
    rlhfkit/cleaning/noise.py), then flips the pairs with P >= --confidence whose members all disagree with
    the label. Where the margins cannot back such a decision (an estimate of 30% or more, or
    members not sure of their most confident half) it flips nothing and says why; --noise-rate
    gives a known rate instead. Each pair gets `clean_action` (keep, flip, smooth or drop; drop > flip > smooth >
    keep); flipped pairs have chosen/rejected swapped and their strength negated (`label` is kept:
    the swap is the correction). Dropped pairs go to --rejects, with bad lines when --on-error
    skip. The estimated noise rate, the rule and counts per action are printed on stderr.
    """
    from ..cleaning.clean import DROP, Rules, apply, decide, flip_quality, without_p_wrong
    from ..io import (InputError, RecordReader, UsageError, atomic_output, check_distinct_outputs, check_file_output,
                      field_map, rereadable, source_name, summary)
    import torch

    from ..cleaning.noise import read_margins

    flip = flip or flip_below is not None or flip_fraction is not None  # asking how much to flip asks to flip
    rules = Rules(flip=flip, flip_below=flip_below, flip_fraction=flip_fraction, confidence=confidence,
                  drop_wrong=drop_wrong, drop_uncertain=drop_uncertain, soft=soft, smooth=smooth,
                  smooth_below=smooth_below, margin=margin, margin_scale=margin_scale, drop_below=drop_below)
    if drop_ambiguous is not None:
        try:
            lo, hi = (float(x) for x in drop_ambiguous.split(":"))
        except ValueError:
            raise UsageError(f"--drop-ambiguous must be LO:HI, got {drop_ambiguous!r}") from None
        rules.drop_ambiguous = (lo, hi)
    dropping = rules.drop_below is not None or rules.drop_ambiguous or drop_wrong or drop_uncertain is not None
    if dropping and not rejects:
        raise UsageError("dropping pairs needs --rejects FILE, so that none is lost")
    if drop_uncertain is not None and drop_uncertain >= confidence:
        raise UsageError(f"--drop-uncertain {drop_uncertain} must lie below --confidence {confidence}")
    check_file_output(out)
    check_file_output(rejects, "--rejects")
    check_distinct_outputs(out=out, rejects=rejects)

    import json

    name = source_name(data)

    def strength_of(ex):
        m = ex.raw.get("strength_mean")
        return m if isinstance(m, (int, float)) and not isinstance(m, bool) else None

    def all_against(ex) -> bool:
        members = ex.raw.get("strength_margins")
        if isinstance(members, list) and members and all(isinstance(d, (int, float)) for d in members):
            return all(d < 0 for d in members)
        return strength_of(ex) < 0

    # two passes over the file, so memory holds numbers, not records (stdin is spooled to disk)
    with rereadable(data) as path:
        means, noisy, unanimous, missing = [], [], [], 0
        first = RecordReader(path, ("pair",), on_error, on_reject=lambda line: None, name=name, fields=field_map(fields))
        for ex in first:
            m = strength_of(ex)
            if m is None:
                if on_error != "skip":
                    raise InputError(name, ex.line, "field 'strength_mean': missing; run `rlhfkit strength` first")
                missing += 1
                continue
            means.append(float(m))
            unanimous.append(all_against(ex))
            noisy.append(ex.raw.get("noisy") if isinstance(ex.raw.get("noisy"), bool) else None)
        if means and rules.needs_p_wrong:
            p_wrong, eps, undecided = read_margins(torch.tensor(means), noise_rate, rules.confidence)
        else:
            p_wrong, eps, undecided = None, None, None
        p_list = p_wrong.tolist() if p_wrong is not None else None
        if undecided:  # P(label wrong) is 0.5 everywhere: the rules built on it leave every pair alone
            rules = without_p_wrong(rules)
            p_list = None
        actions = decide(means, rules, p_list, unanimous)
        with atomic_output(out) as fo, atomic_output(rejects, "wb") if rejects else _nowhere() as fr:
            second = RecordReader(path, ("pair",), on_error, on_reject=fr.write, name=name, fields=field_map(fields),
                                  notes=False)
            k = 0
            for ex in second:
                if strength_of(ex) is None:
                    fr.write((json.dumps(ex.output(), ensure_ascii=False) + "\n").encode())
                    continue
                rec = apply(ex.output(), actions[k], rules, p_list[k] if p_list else None)
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
    if undecided:
        info["noise_rate_estimate"] = round(eps, 4)
        info["undecided"] = undecided
        err_console.print(f"[bold]clean[/]: nothing is flipped, softened or dropped by P(label wrong): {undecided}. "
                          "Stronger members (a larger `strength --model`) may tell; "
                          "--flip-below/--flip-fraction decide without them.", highlight=False)
    elif eps is not None:
        info["noise_rate_given" if noise_rate is not None else "noise_rate_estimate"] = round(eps, 4)
        flipped = [m for m, a in zip(means, actions) if a in ("flip", "drop") and rules.confident_rule]
        rule = f"P(label wrong) >= {rules.confidence:g} with every member against the label"
        info["rule"] = rule
        if flipped:
            info["strength_threshold"] = round(max(flipped), 4)
        left = [1 - p if a == "flip" else p for p, a in zip(p_list, actions) if a != "drop"]
        info["expected_noise_left"] = round(sum(left) / max(1, len(left)), 4)  # train-rm --noise-rate can take it
        err_console.print(f"{'given' if noise_rate is not None else 'estimated'} noise rate {eps:.1%}; rule: {rule}"
                          + (f" (here: strength_mean <= {max(flipped):.3f})" if flipped else "")
                          + f"; expected share of wrong labels left {info['expected_noise_left']:.1%}", highlight=False)
    if means and all(v is not None for v in noisy):  # synth's flags: reported, never used to decide
        info["flip_quality"] = flip_quality(actions, noisy)
        q = info["flip_quality"]
        precision = "–" if q["precision"] is None else f"{q['precision']:.3f}"
        err_console.print(f"flips vs injected noise: precision {precision}, recall {q['recall']:.3f}")
    summary(stage="clean", **info)


class _Discard:
    def write(self, _data) -> None:
        pass


@contextmanager
def _nowhere():
    """A sink for rejects when none was asked for (only --on-error skip without --rejects reaches it)."""
    yield _Discard()
