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


def distribution_figure(path: str, series: dict[str, Sequence[float]], xlabel: str) -> None:
    """Histogram and empirical CDF of one or more sets of values (PM RLHF Figs 5-8)."""
    plt = _pyplot()
    fig, (ax_h, ax_c) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, values in series.items():
        ax_h.hist(values, bins=40, alpha=0.6, label=name)
        xs = sorted(values)
        ax_c.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=name)
    ax_h.set(xlabel=xlabel, ylabel="prompts", title="histogram")
    ax_c.set(xlabel=xlabel, ylabel="fraction of prompts", title="CDF")
    ax_c.legend(loc="lower right")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def reward_dist_figure(path: str, pooled: dict[str, Sequence[float]], by_rank: dict[str, Sequence[float]], field: str) -> None:
    """Reward histograms per prompt group and the mean reward at each rank (Reward Collapse figures)."""
    plt = _pyplot()
    fig, (ax_h, ax_r) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, values in pooled.items():
        ax_h.hist(values, bins=30, alpha=0.6, label=f"{field}={name}")
    for name, curve in by_rank.items():
        ax_r.plot(range(1, len(curve) + 1), curve, marker="o", label=f"{field}={name}")
    ax_h.set(xlabel="reward", ylabel="responses", title="reward distribution")
    ax_r.set(xlabel="rank (1 = best)", ylabel="mean reward", title="reward by rank")
    ax_h.legend()
    ax_r.legend()
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def returns_figure(path: str, settings: dict[str, dict[str, Sequence[float]]]) -> None:
    """Histograms of the two policies' returns, one panel per setting (Uncertainty-aware RLHF Figs 3-5)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings), 3.6), squeeze=False)
    for ax, (name, series) in zip(axes[0], settings.items()):
        for label, values in series.items():
            ax.hist(values, bins=60, alpha=0.6, label=label)
        ax.set(title=name, xlabel="true return r*·π", ylabel="draws")
        ax.legend()
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def curves_figure(path: str, xs: Sequence[float], curves: dict[str, Sequence[float]]) -> None:
    """Policy preference against the true preference (PM RLHF Fig. 2)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, ys in curves.items():
        ax.plot(xs, ys, label=name, lw=2.5 if name == "pm" else 1.2, color="black" if name == "pm" else None)
    ax.set(xlabel="true preference p*(y1 > y2)", ylabel="policy preference for y1", title="KL-RLHF vs preference matching")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
