"""Preference strength (Secrets of RLHF II §2): the ensemble's reward margin per pair.

For pair i and member m, d_im = r_m(x, y_chosen) − r_m(x, y_rejected); the strength is the mean
μ_i over members and its spread σ_i = sqrt(Σ_m (d_im − μ_i)² / M) (population form, as the paper).
"""

from __future__ import annotations

from typing import Sequence

import torch


def strength(margins: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, population std) over members of an N x M matrix of reward margins."""
    return margins.mean(dim=1), margins.std(dim=1, correction=0)


def pair_margins(scorer, examples: Sequence, batch_size: int = 32, progress=None) -> torch.Tensor:
    """N x M margins r_m(chosen) − r_m(rejected), scoring every text once."""
    n = len(examples)
    prompts = [e.prompt for e in examples] * 2
    responses = [e.chosen for e in examples] + [e.rejected for e in examples]
    rewards = scorer.score(prompts, responses, batch_size, progress)
    return rewards[:n] - rewards[n:]


def auroc(scores: Sequence[float], positives: Sequence[bool]) -> float:
    """Area under the ROC curve: the chance a random positive scores above a random negative
    (ties count half). Used to measure how well −strength finds flipped labels."""
    s = torch.tensor(list(scores), dtype=torch.float64)
    y = torch.tensor(list(positives), dtype=torch.bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(s)
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.float64)
    for v in torch.unique(s):  # average ranks over ties
        tie = s == v
        ranks[tie] = ranks[tie].mean()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def describe(means: torch.Tensor, stds: torch.Tensor) -> dict:
    q = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=means.dtype)
    return {
        "pairs": len(means),
        "fraction_mean_below_0": float((means < 0).float().mean()),
        "mean_quantiles": {f"q{int(p * 100)}": round(float(v), 4) for p, v in zip(q, torch.quantile(means, q))},
        "std_median": round(float(stds.median()), 4),
    }


def decile_curve(means: torch.Tensor, stds: torch.Tensor) -> list[tuple[float, float]]:
    """(mean of μ, mean of σ) in each decile of pairs sorted by μ (the paper's Figure 2)."""
    order = torch.argsort(means)
    chunks = torch.tensor_split(order, 10)
    return [(float(means[c].mean()), float(stds[c].mean())) for c in chunks if len(c)]
