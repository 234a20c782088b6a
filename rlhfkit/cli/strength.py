"""`rlhfkit strength`: per-pair preference strength from an ensemble."""

from __future__ import annotations

from typing import Optional

import typer

from .common import ON_ERROR, OUT, REJECTS, SEED, err_console, handle_errors


@handle_errors
def strength(
    data: str = typer.Argument("-", help="Pair records; '-' for stdin."),
    ensemble: Optional[str] = typer.Option(None, "--ensemble", help="Ensemble (or reward-model) directory; default: train one on DATA."),
    model: str = typer.Option("minilm", "--model", help="Backbone when training the ensemble here."),
    from_rm: Optional[str] = typer.Option(None, "--from-rm", help="Train the heads here on this reward model's backbone (two-stage recipe; usually sharper)."),
    heads: int = typer.Option(10, "--heads", min=1, help="Heads when training the ensemble here."),
    epochs: int = typer.Option(3, "--epochs", min=1, help="Head epochs when training the ensemble here."),
    save_ensemble: Optional[str] = typer.Option(None, "--save-ensemble", help="Keep the ensemble trained here in this directory."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=1, help="Tokens per text (default: the --ensemble's own, else 512)."),
    plot: Optional[str] = typer.Option(None, "--plot", help="PNG: histograms of mean and std, std by decile of mean."),
    seed: int = SEED,
    out: Optional[str] = OUT,
    on_error: str = ON_ERROR,
    rejects: Optional[str] = REJECTS,
) -> None:
    """Add strength_mean, strength_std and strength_margins to every pair.

    The margin r_m(chosen) - r_m(rejected) of each ensemble member m; mean and population std
    over members. Without --ensemble, trains one on DATA itself (frozen --model, K heads), as the
    paper lets its models vote on their own training data. Summary: fraction of pairs with mean
    below 0, quantiles, and the AUROC of -mean for finding pairs marked `noisy` when present.
    """
    from ..ensemble import HeadTraining, build_ensemble
    from ..io import read_records, summary, write_records
    from ..progress import task_progress
    from ..scoring import load_scorer
    from ..strength import auroc, decile_curve, describe, pair_margins
    from ..strength import strength as strength_of

    from ..io import check_dir_output, check_distinct_outputs, check_file_output

    check_file_output(out)
    check_file_output(rejects, "--rejects")
    check_file_output(plot, "--plot")
    check_distinct_outputs(out=out, rejects=rejects, plot=plot)
    if save_ensemble:
        check_dir_output(save_ensemble, "--save-ensemble")
    examples, stats = read_records(data, ("pair",), on_error, rejects)
    if ensemble is None:  # train on DATA itself; its rewards on DATA come with it (one backbone pass)
        from contextlib import nullcontext

        from ..io import scratch_dir

        with nullcontext(save_ensemble) if save_ensemble else scratch_dir("ensemble") as directory:
            _, rewards = build_ensemble(examples, directory, model, HeadTraining(heads=heads, epochs=epochs, seed=seed),
                                        from_rm=from_rm, max_length=max_length or 512, batch_size=batch_size)
        margins, members = rewards[: len(examples)] - rewards[len(examples):], heads
    else:
        directory = ensemble
        scorer = load_scorer(directory, max_length=max_length)
        with task_progress("strength", 2 * len(examples)) as advance:
            margins = pair_margins(scorer, examples, batch_size, advance)
        members = scorer.heads
    means, stds = strength_of(margins)
    write_records(out, (ex.output(strength_mean=m, strength_std=s, strength_margins=d)
                        for ex, m, s, d in zip(examples, means.tolist(), stds.tolist(), margins.tolist())))
    info = describe(means, stds)
    if all("noisy" in ex.raw for ex in examples):
        info["noisy_auroc"] = round(auroc((-means).tolist(), [bool(ex.raw["noisy"]) for ex in examples]), 4)
    if plot:
        from ..plots import strength_figure

        strength_figure(plot, means.tolist(), stds.tolist(), decile_curve(means, stds))
    err_console.print(f"[bold]strength[/]: {info['pairs']} pairs, {info['fraction_mean_below_0']:.1%} with mean < 0"
                      + (f", AUROC for noisy pairs {info['noisy_auroc']:.3f}" if "noisy_auroc" in info else ""))
    summary(stage="strength", ensemble=directory if ensemble or save_ensemble else None, members=members, skipped=stats.skipped, **info)
