"""PNG figures (matplotlib, headless)."""

from __future__ import annotations

import os
from typing import Sequence


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)


def strength_figure(path: str, means: Sequence[float], stds: Sequence[float], deciles: Sequence[tuple[float, float]]) -> None:
    """Histograms of strength mean and std, and std against mean by decile (Secrets II Figs 1-2)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].hist(means, bins=50, color="tab:blue")
    axes[0].axvline(0, color="black", lw=0.8, ls="--")
    axes[0].set(title="preference strength: mean", xlabel="mean reward margin", ylabel="pairs")
    axes[1].hist(stds, bins=50, color="tab:orange")
    axes[1].set(title="preference strength: std", xlabel="std of reward margin over the ensemble")
    xs, ys = zip(*deciles)
    axes[2].plot(range(1, len(xs) + 1), ys, marker="o", color="tab:orange", label="std")
    ax2 = axes[2].twinx()
    ax2.plot(range(1, len(xs) + 1), xs, marker="s", color="tab:blue", label="mean")
    axes[2].set(title="by decile of mean strength", xlabel="decile (lowest mean first)", ylabel="mean std")
    ax2.set_ylabel("mean of mean")
    lines = axes[2].get_lines() + ax2.get_lines()
    axes[2].legend(lines, [line.get_label() for line in lines], loc="upper left")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
