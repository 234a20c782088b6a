"""`rlhfkit strength`: per-pair preference strength, out of sample by default."""

from __future__ import annotations

from typing import Optional

import typer

from .common import DTYPE, FIELDS, ON_ERROR, OUT, REJECTS, SEED, err_console, handle_errors

# The default members (3 folds x 3 epochs) are the strongest that fit the CPU time budget on 1,000
# pairs; 5 folds x 3 epochs (members see 4/5 of the pairs, not 2/3) cleaned a little better on synth
# at about twice the time (benchmarks/noise_synth.py, docs/results.md §1), so the summary names it.
STRONGER_FOLDS, STRONGER_MEMBER_EPOCHS = 5, 3


@handle_errors
def strength(
    data: str = typer.Argument("-", metavar="FILE", help="Pair records; '-' for stdin."),
    ensemble: Optional[str] = typer.Option(None, "--ensemble", metavar="DIR", help="Score with a ready ensemble (or reward-model) directory instead of training members here."),
    model: str = typer.Option("minilm", "--model", metavar="MODEL", help="Base model of the members trained here."),
    folds: int = typer.Option(3, "--folds", min=2, metavar="N", help="Cross-fitting: each pair is scored by a model trained on the other N-1 folds."),
    rounds: int = typer.Option(1, "--rounds", min=1, metavar="N", help="Cross-fitting rounds; each later round trains on labels the previous one corrected (slower, a little sharper)."),
    member_epochs: float = typer.Option(3.0, "--member-epochs", metavar="X", help="Epochs of each cross-fitted member's fine-tuning."),
    member_lr: float = typer.Option(5e-5, "--member-lr", metavar="X", help="Learning rate of the members' fine-tuning."),
    work_dir: Optional[str] = typer.Option(None, "--work-dir", metavar="DIR", help="Keep each finished fold's margins here, so that an interrupted run can --resume."),
    resume: bool = typer.Option(False, "--resume", help="With --work-dir: read the folds a stopped run with the same inputs and flags finished, train only the rest."),
    in_sample: bool = typer.Option(False, "--in-sample", help="The paper's construction instead: K heads on a frozen --model (or --from-rm) trained on DATA itself, voting on their own training pairs."),
    from_rm: Optional[str] = typer.Option(None, "--from-rm", metavar="DIR", help="--in-sample heads on this reward model's backbone (the two-stage recipe)."),
    heads: int = typer.Option(10, "--heads", min=0, metavar="K", help="Members per fold: bootstrap refits of the fold model's head, each pair's margins (0: the fold model's own margin, std 0); --in-sample: heads in all."),
    epochs: int = typer.Option(3, "--epochs", min=1, metavar="N", help="--in-sample: epochs of the heads' fitting (the cross-fitted refits are solved to convergence)."),
    save_ensemble: Optional[str] = typer.Option(None, "--save-ensemble", metavar="DIR", help="--in-sample: keep the ensemble trained here in this directory."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, metavar="N", help="Pairs per training step of the members; texts per scoring pass is twice this."),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=1, metavar="N", help="Tokens per text (default 256 for members trained here; an --ensemble's own)."),
    dtype: str = DTYPE,
    plot: Optional[str] = typer.Option(None, "--plot", metavar="PNG", help="Histograms of mean and std, std by decile of mean, and (with synth's noisy flags) the reliability of P(label wrong)."),
    seed: int = SEED,
    out: Optional[str] = OUT,
    on_error: str = ON_ERROR,
    rejects: Optional[str] = REJECTS,
    fields: Optional[str] = FIELDS,
) -> None:
    """Add strength_mean, strength_std and strength_margins to every pair.

    strength_mean is the reward margin r(chosen) - r(rejected) in the order the record gives,
    averaged over members that never trained on that pair: k-fold cross-fitting of --model (one
    fine-tuned reward model per fold and round), so a negative mean means models that had not
    seen the pair prefer the other response. The members are --heads refits per fold of the fold
    model's own head, each solved to convergence on a bootstrap resample of the fold's training
    pairs and scoring only the held-out fold; strength_margins holds their K x rounds margins and
    strength_std their spread (population form): how far the margin moves when the training
    pairs are redrawn (0 without resampling, whatever the start). It grows with how different
    the two responses are, so it is not a measure of doubt about the label.
    The summary gives the noise rate
    estimated from the margins (see `clean`), quantiles, the time taken, and, when records carry
    synth's `noisy` flag, the AUROC of -mean and the calibration of P(label wrong); these flags
    are never used to decide anything. --in-sample gives the paper's construction; --ensemble
    scores with a ready ensemble.
    """
    from ..io import (UsageError, check_dir_output, check_distinct_outputs, check_file_output, field_map, read_records,
                      summary, write_records)
    from ..cleaning.noise import calibration, read_margins
    from ..progress import task_progress
    from ..cleaning.strength import auroc, decile_curve, describe, pair_margins
    from ..cleaning.strength import strength as strength_of

    check_file_output(out)
    check_file_output(rejects, "--rejects")
    check_file_output(plot, "--plot")
    check_distinct_outputs(out=out, rejects=rejects, plot=plot)
    if save_ensemble:
        check_dir_output(save_ensemble, "--save-ensemble")
    if (from_rm or save_ensemble) and not in_sample and ensemble is None:
        in_sample = True  # --from-rm and --save-ensemble only make sense for the in-sample heads
    if in_sample and heads < 1:
        raise UsageError("--in-sample needs at least one head: give --heads 1 or more")
    if work_dir and (in_sample or ensemble is not None):
        raise UsageError("--work-dir keeps cross-fitted folds: it does not apply to --in-sample or --ensemble")
    if resume and not work_dir:
        raise UsageError("--resume reads the folds kept by --work-dir DIR: give the directory of the stopped run")
    if work_dir:
        check_dir_output(work_dir, "--work-dir")
    examples, stats = read_records(data, ("pair",), on_error, rejects, field_map(fields))
    info: dict = {}
    fold_model_margins = None  # cross-fitting: the fold models' own margins, for the summary's comparison
    if ensemble is not None:
        from ..cleaning.scoring import load_scorer

        scorer = load_scorer(ensemble, max_length=max_length, dtype=dtype, one_at_a_time=True)
        with task_progress("strength", 2 * len(examples)) as advance:
            margins = pair_margins(scorer, examples, batch_size * 2, advance)
        info.update(construction="ensemble", ensemble=ensemble, members=scorer.heads)
    elif in_sample:
        from contextlib import nullcontext

        from ..cleaning.ensemble import HeadTraining, build_ensemble
        from ..io import scratch_dir

        with nullcontext(save_ensemble) if save_ensemble else scratch_dir("ensemble") as directory:
            _, rewards = build_ensemble(examples, directory, model, HeadTraining(heads=heads, epochs=epochs, seed=seed),
                                        from_rm=from_rm, max_length=max_length or 512, batch_size=batch_size * 2)
        margins = rewards[: len(examples)] - rewards[len(examples):]
        info.update(construction="in-sample heads", members=heads, ensemble=save_ensemble)
    else:
        from ..cleaning.crossfit import CrossFit, FoldStore, cross_fit

        cfg = CrossFit(model=model, folds=folds, rounds=rounds, epochs=member_epochs, lr=member_lr,
                       batch_size=batch_size, max_length=max_length or 256, seed=seed, heads=heads,
                       dtype=dtype)
        err_console.print(f"strength: cross-fitting {len(examples)} pairs, {folds} folds x {rounds} round(s) of "
                          f"{model} fine-tuned {member_epochs:g} epoch(s) each"
                          + (f", {heads} bootstrap refits of each fold model's head" if heads else ""), highlight=False)
        try:
            store = FoldStore(work_dir, examples, cfg, resume) if work_dir else None
            with task_progress("strength (cross-fitting)", folds * rounds) as advance:
                margins, _, fit_info = cross_fit(examples, cfg, advance, store)
        except ValueError as e:
            raise UsageError(str(e)) from None
        margins = margins.float()
        fold_model_margins = fit_info["fold_model_margins"].mean(1)
        info.update(construction="cross-fitted", folds=folds, rounds=rounds, heads_per_fold=heads, members=cfg.members,
                    model=model, member_epochs=member_epochs, seconds=fit_info["seconds"],
                    seconds_spread=fit_info["seconds_spread"])
        if work_dir:
            info.update(work_dir=work_dir, folds_reused=fit_info["folds_reused"])
            if fit_info["folds_reused"]:
                err_console.print(f"strength: resumed: {fit_info['folds_reused']} of {folds * rounds} fold(s) read from "
                                  f"{work_dir}, not retrained", highlight=False)
        if folds < STRONGER_FOLDS or member_epochs < STRONGER_MEMBER_EPOCHS:
            cost = (STRONGER_FOLDS - 1) * STRONGER_MEMBER_EPOCHS / ((folds - 1) * member_epochs)  # pairs x epochs trained
            info["stronger"] = (f"--folds {STRONGER_FOLDS} --member-epochs {STRONGER_MEMBER_EPOCHS}: about {cost:.2g}x "
                                "the member training, and the reward model trained on its cleaning did a little "
                                "better on synth (docs/results.md §1); the default fits 2 CPU cores")
    means, stds = strength_of(margins)
    write_records(out, (ex.output(strength_mean=m, strength_std=s, strength_margins=d)
                        for ex, m, s, d in zip(examples, means.tolist(), stds.tolist(), margins.tolist())))
    info.update(describe(means, stds))
    pw, eps, undecided = read_margins(means)
    info["noise_rate_estimate"] = round(eps, 4)
    if undecided:
        info["undecided"] = undecided
    calib = None
    if all(isinstance(ex.raw.get("noisy"), bool) for ex in examples):  # reported, never used to decide
        noisy = [ex.raw["noisy"] for ex in examples]
        info["noisy_auroc"] = round(auroc((-means).tolist(), noisy), 4)
        if fold_model_margins is not None and not fold_model_margins.isnan().any():
            info["noisy_auroc_fold_models"] = round(auroc((-fold_model_margins).tolist(), noisy), 4)
        ece, table = calibration(pw.tolist(), noisy)
        info["p_wrong_ece"] = round(ece, 4)
        calib = table
    if plot:
        from ..plots import strength_figure

        strength_figure(plot, means.tolist(), stds.tolist(), decile_curve(means, stds), calib)
    err_console.print(f"[bold]strength[/]: {info['pairs']} pairs ({info['construction']}), "
                      f"{info['fraction_mean_below_0']:.1%} with mean < 0, estimated noise rate "
                      f"{info['noise_rate_estimate']:.1%}"
                      + (f", AUROC for noisy pairs {info['noisy_auroc']:.3f}" if "noisy_auroc" in info else "")
                      + (f", {info['seconds']:.0f} s" if "seconds" in info else ""))
    if undecided:
        err_console.print(f"strength: `clean`'s confident rule will flip nothing here: {undecided}", highlight=False)
    if "stronger" in info:
        err_console.print(f"strength: {folds} folds, members trained {member_epochs:g} epoch(s); stronger: {info['stronger']}",
                          highlight=False)
    summary(stage="strength", skipped=stats.skipped, **stats.counts(), **info)
