"""`rlhfkit simulate ...`: the papers' theory experiments."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from .common import SEED, err_console, handle_errors, positive

simulate_app = typer.Typer(help="The papers' theory experiments (variance-aware policies, PM bias).",
                           no_args_is_help=True, rich_markup_mode=None)


@simulate_app.command("variance-aware", short_help="Uncertainty-aware RLHF's theory check (return mean and std).")
@handle_errors
def variance_aware_cmd(
    dim: int = typer.Option(1000, "--dim", min=1, metavar="N", help="Number of responses (the paper: 1000)."),
    draws: int = typer.Option(2000, "--draws", min=1, metavar="N", help="Reward estimates drawn per setting."),
    epsilon: float = typer.Option(1.69, "--epsilon", callback=positive, metavar="X", help="Policy step budget."),
    reward_scale: float = typer.Option(0.1, "--reward-scale", metavar="X", help="r*_i ~ N(0, scale^2)."),
    base_return: float = typer.Option(4.6, "--base-return", metavar="X", help="r*.pi0, the starting policy's return."),
    high: str = typer.Option("3:100", "--high", metavar="LIST", help="Variance range of the high-variability setting."),
    low: str = typer.Option("70:100", "--low", metavar="LIST", help="Variance range of the low-variability setting."),
    plot: Optional[str] = typer.Option(None, "--plot", metavar="PNG", help="PNG: histograms of both policies' returns per setting."),
    seed: int = SEED,
) -> None:
    """Uncertainty-aware RLHF's theory check: return mean/std of vanilla vs variance-aware policies."""
    from ..io import UsageError
    from ..simulate import variance_aware

    results = {}
    for name, spec in (("high", high), ("low", low)):
        try:
            lo, hi = (float(x) for x in spec.split(":"))
        except ValueError:
            raise UsageError(f"--{name} must be LO:HI, got {spec!r}") from None
        results[name] = variance_aware(dim, lo, hi, draws, epsilon, reward_scale, base_return, seed)
    if plot:
        from ..plots import returns_figure

        returns_figure(plot, {f"variances {r['variance_range'][0]:g}-{r['variance_range'][1]:g}": r["returns"]
                              for r in results.values()})
    from rich.table import Table

    table = Table(title="variance-aware vs vanilla policy: return over reward draws", show_edge=False)
    for col in ("setting", "vanilla mean", "vanilla std", "var-aware mean", "var-aware std", "std ratio"):
        table.add_column(col)
    for name, r in results.items():
        table.add_row(f"{name} ({r['variance_range'][0]:g}-{r['variance_range'][1]:g})", f"{r['vanilla']['mean']:.3f}",
                      f"{r['vanilla']['std']:.3f}", f"{r['variance_aware']['mean']:.3f}",
                      f"{r['variance_aware']['std']:.3f}", f"{r['std_ratio_vanilla_over_variance_aware']:.2f}")
    err_console.print(table)
    for r in results.values():
        del r["returns"]
    sys.stdout.write(json.dumps({"simulation": "variance-aware", **results}) + "\n")


@simulate_app.command("pm-bias", short_help="KL-RLHF's optimum vs preference matching's, by reference bias and beta.")
@handle_errors
def pm_bias_cmd(
    ref_prefs: str = typer.Option("0.2,0.5,0.8", "--ref-prefs", metavar="P1,P2,..", help="Reference preferences q for the first response."),
    betas: str = typer.Option("0.5,1,2", "--betas", metavar="B1,B2,..", help="Comma-separated beta values (regulariser weights)."),
    plot: Optional[str] = typer.Option(None, "--plot", metavar="PNG", help="PNG: policy preference against true preference."),
) -> None:
    """PM RLHF's bias: the KL-RLHF optimum's preference vs the true one, against preference matching."""
    from ..simulate import pm_bias

    result = pm_bias(tuple(float(x) for x in ref_prefs.split(",")), tuple(float(x) for x in betas.split(",")))
    if plot:
        from ..plots import curves_figure

        curves_figure(plot, result["p_star"], result["curves"])
    from rich.table import Table

    table = Table(title="policy preference for y1 at true preference p*", show_edge=False)
    table.add_column("curve")
    checkpoints = [0.1, 0.3, 0.5, 0.7, 0.9]
    idx = [min(range(len(result["p_star"])), key=lambda i: abs(result["p_star"][i] - p)) for p in checkpoints]
    for p in checkpoints:
        table.add_column(f"p*={p}")
    for name, ys in result["curves"].items():
        table.add_row(name, *[f"{ys[i]:.3f}" for i in idx])
    err_console.print(table)
    sys.stdout.write(json.dumps({"simulation": "pm-bias", **result}) + "\n")
