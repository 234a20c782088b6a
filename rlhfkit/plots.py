"""PNG figures (matplotlib, headless)."""

from __future__ import annotations

import os
from typing import Sequence


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# Told apart without colour too (greyscale print, colour-blind readers): each series also gets its
# own line style and marker.
STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1)), "v"), ((0, (1, 1)), "P"), ((0, (3, 1, 1, 1)), "X")]
HATCHES = ["", "//", "..", "xx", "\\\\", "oo"]


def _save(fig, path: str) -> None:
    """Written like every rlhfkit output: complete or absent (temp file, then rename)."""
    from .io import atomic_output

    with atomic_output(path, "wb") as fh:
        fig.savefig(fh, dpi=120, bbox_inches="tight", format="png")


def short_label(name: str) -> str:
    """A series name for a legend: a directory's last component, never a whole local path."""
    name = str(name).rstrip("/")
    return os.path.basename(name) or name


DEGENERATE_STD = ("std is 0 on every pair:\none margin per pair\n(a single member),\n"
                  "so there is no spread to show")


def strength_figure(path: str, means: Sequence[float], stds: Sequence[float], deciles: Sequence[tuple[float, float]],
                    reliability: Sequence[dict] | None = None) -> None:
    """Histograms of strength mean and std, std against mean by decile (Secrets II Figs 1-2) and,
    when the truth is known (synth), the reliability diagram of P(label wrong)."""
    plt = _pyplot()
    panels = 4 if reliability else 3
    fig, axes = plt.subplots(1, panels, figsize=(4.4 * panels, 3.9))
    fig.suptitle("preference strength: reward margin r(chosen) - r(rejected) over the members")
    axes[0].hist(means, bins=50, color="tab:blue")
    axes[0].axvline(0, color="black", lw=0.8, ls="--")
    axes[0].set(title="mean", xlabel="mean reward margin (reward units)", ylabel="pairs (count)")
    xs, ys = zip(*deciles)
    if max(stds, default=0.0) > 0:
        axes[1].hist(stds, bins=50, color="tab:orange", hatch="//")
        axes[2].plot(range(1, len(xs) + 1), ys, marker="o", color="tab:orange", label="std")
    else:  # one margin per pair (one member): there is no spread to draw, and an empty panel would hide why
        axes[1].text(0.5, 0.5, DEGENERATE_STD, ha="center", va="center", wrap=True, transform=axes[1].transAxes)
        axes[2].text(0.5, 0.08, "std: none (one margin per pair)", ha="center", transform=axes[2].transAxes)
    axes[1].set(title="std", xlabel="std of the margin over members (reward units)", ylabel="pairs (count)")
    ax2 = axes[2].twinx()
    ax2.plot(range(1, len(xs) + 1), xs, marker="s", ls="--", color="tab:blue", label="mean")
    axes[2].set(title="by decile of mean strength", xlabel="decile (lowest mean first)", ylabel="mean std")
    ax2.set_ylabel("mean of mean")
    lines = axes[2].get_lines() + ax2.get_lines()
    axes[2].legend(lines, [line.get_label() for line in lines], loc="upper left")
    if reliability:
        ax = axes[3]
        ax.plot([0, 1], [0, 1], color="grey", ls=":", label="perfect calibration")
        ax.plot([r["mean_probability"] for r in reliability], [r["observed"] for r in reliability], marker="o",
                color="black", label="P(label wrong)")
        ax.set(title="reliability (truth from synth)", xlabel="predicted P(label wrong)",
               ylabel="observed fraction wrong", xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def distribution_figure(path: str, series: dict[str, Sequence[float]], xlabel: str, title: str = "") -> None:
    """Histogram and empirical CDF of one or more sets of values (PM RLHF Figs 5-8)."""
    plt = _pyplot()
    fig, (ax_h, ax_c) = plt.subplots(1, 2, figsize=(10, 3.9))
    for k, (name, values) in enumerate(series.items()):
        ls, marker = STYLES[k % len(STYLES)]
        ax_h.hist(values, bins=40, alpha=0.55, label=short_label(name), hatch=HATCHES[k % len(HATCHES)])
        xs = sorted(values)
        ax_c.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], ls=ls, label=short_label(name))
    ax_h.set(xlabel=xlabel, ylabel="prompts (count)", title="histogram")
    ax_c.set(xlabel=xlabel, ylabel="fraction of prompts", title="empirical CDF")
    ax_h.legend(loc="upper right")
    ax_c.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def reward_dist_figure(path: str, pooled: dict[str, Sequence[float]], by_rank: dict[str, Sequence[float]], field: str,
                       reward_label: str = "reward", title: str = "") -> None:
    """Reward histograms per prompt group and the mean reward at each rank (Reward Collapse figures)."""
    plt = _pyplot()
    fig, (ax_h, ax_r) = plt.subplots(1, 2, figsize=(10, 3.9))
    for k, (name, values) in enumerate(pooled.items()):
        ax_h.hist(values, bins=30, alpha=0.55, label=f"{field}={name}", hatch=HATCHES[k % len(HATCHES)])
    for k, (name, curve) in enumerate(by_rank.items()):
        ls, marker = STYLES[k % len(STYLES)]
        ax_r.plot(range(1, len(curve) + 1), curve, ls=ls, marker=marker, label=f"{field}={name}")
    ax_h.set(xlabel=reward_label, ylabel="responses (count)", title="reward distribution per group")
    ax_r.set(xlabel="rank within the prompt (1 = best)", ylabel=f"mean {reward_label}", title="mean reward by rank")
    if title:
        fig.suptitle(title)
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
        for k, (label, values) in enumerate(series.items()):
            ax.hist(values, bins=60, alpha=0.55, label=label, hatch=HATCHES[k % len(HATCHES)])
        ax.set(title=name, xlabel="true return r*·π (reward units)", ylabel="draws (count)")
        ax.legend()
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def curves_figure(path: str, xs: Sequence[float], curves: dict[str, Sequence[float]]) -> None:
    """Policy preference against the true preference (PM RLHF Fig. 2)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    # line style by the reference's preference q, marker by beta: 9 curves stay apart in greyscale
    qs = sorted({n.split("q=")[1].split()[0] for n in curves if "q=" in n})
    betas = sorted({n.split("beta=")[1].split()[0] for n in curves if "beta=" in n})
    dashes, markers = ["-", "--", ":", "-."], ["o", "s", "^", "D", "v"]
    for k, (name, ys) in enumerate(curves.items()):
        if name == "pm":
            ax.plot(xs, ys, label=name, lw=2.8, color="black")
            continue
        q = name.split("q=")[1].split()[0] if "q=" in name else None
        b = name.split("beta=")[1].split()[0] if "beta=" in name else None
        ls = dashes[qs.index(q) % len(dashes)] if q in qs else STYLES[k % len(STYLES)][0]
        marker = markers[betas.index(b) % len(markers)] if b in betas else STYLES[k % len(STYLES)][1]
        ax.plot(xs, ys, label=name, lw=1.2, ls=ls, marker=marker, markevery=max(1, len(xs) // 8), markersize=4)
    ax.set(xlabel="true preference p*(y1 > y2)", ylabel="policy's preference for y1",
           title="KL-RLHF optimum vs preference matching")
    ax.legend(fontsize=7, ncol=2, title="q = reference's preference for y1", title_fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
