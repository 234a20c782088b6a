"""Evaluation metrics as pure functions (METHODS.md §5)."""

from __future__ import annotations

import math
import random
from typing import Sequence

import torch


def pm_divergence(logp: torch.Tensor, rewards: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Per prompt, KL(p_llm ‖ p_reward) over its k sampled responses (PM RLHF §6.1).

    ``logp`` and ``rewards`` are [prompts, k]: log π(y_i|x) and r(x, y_i). p_llm normalises the
    policy's probabilities over the k samples; p_reward is softmax(r/β) over them.
    """
    log_p_llm = torch.log_softmax(logp.double(), dim=-1)
    log_p_reward = torch.log_softmax(rewards.double() / beta, dim=-1)
    return (log_p_llm.exp() * (log_p_llm - log_p_reward)).sum(-1)


def generation_stats(logp: Sequence[float], ref_logp: Sequence[float], lengths: Sequence[int]) -> dict:
    """Mean length, perplexity (Π p_t)^(−1/L) averaged over responses, entropy E[−log π(y|x)],
    and KL E[log π(y|x) − log π_ref(y|x)], all from sampled responses."""
    n = len(logp)
    return {
        "responses": n,
        "length": sum(lengths) / n,
        "perplexity": sum(math.exp(-lp / max(1, L)) for lp, L in zip(logp, lengths)) / n,
        "entropy": -sum(logp) / n,
        "kl": sum(a - b for a, b in zip(logp, ref_logp)) / n,
    }


def accuracy_by_subset(correct: Sequence[bool], subsets: Sequence[str], sections: dict[str, list[str]] | None = None) -> dict:
    """Strict accuracy per subset, overall, and per section as the example-weighted mean of its
    subsets (RewardBench's convention)."""
    per: dict[str, list[int]] = {}
    for c, s in zip(correct, subsets):
        hit = per.setdefault(s, [0, 0])
        hit[0] += int(c)
        hit[1] += 1
    result = {"overall": sum(map(int, correct)) / len(correct), "n": len(correct),
              "subsets": {s: {"accuracy": h / n, "n": n} for s, (h, n) in sorted(per.items())}}
    if sections:
        result["sections"] = {}
        for name, members in sections.items():
            missing = [m for m in members if m not in per]
            if missing:
                raise ValueError(f"section {name!r}: no records of subset(s) {', '.join(missing)}")
            hits, total = sum(per[m][0] for m in members), sum(per[m][1] for m in members)
            result["sections"][name] = {"accuracy": hits / total, "n": total}
    return result


def win_rate(verdicts: Sequence[str], player: str = "A", n_boot: int = 10000, seed: int = 0) -> dict:
    """(wins + ties/2) / n for ``player`` with a percentile-bootstrap 95% interval."""
    other = "B" if player == "A" else "A"
    values = [1.0 if v == player else 0.0 if v == other else 0.5 for v in verdicts]
    n = len(values)
    rate = sum(values) / n
    rng = random.Random(seed)
    boots = sorted(sum(rng.choices(values, k=n)) / n for _ in range(n_boot))
    lo, hi = boots[int(0.025 * n_boot)], boots[min(n_boot - 1, int(0.975 * n_boot))]
    return {"player": player, "n": n, "wins": values.count(1.0), "ties": values.count(0.5), "losses": values.count(0.0),
            "win_rate": rate, "ci95": [lo, hi]}


def wasserstein_1d(a: Sequence[float], b: Sequence[float]) -> float:
    """1-Wasserstein distance between two empirical distributions on the line."""
    xa, xb = sorted(a), sorted(b)
    grid = sorted(set(xa) | set(xb))
    total, ia, ib = 0.0, 0, 0
    for left, right in zip(grid, grid[1:]):
        while ia < len(xa) and xa[ia] <= left:
            ia += 1
        while ib < len(xb) and xb[ib] <= left:
            ib += 1
        total += abs(ia / len(xa) - ib / len(xb)) * (right - left)
    return total


def ks_statistic(a: Sequence[float], b: Sequence[float]) -> float:
    """Largest gap between the two empirical CDFs."""
    xa, xb = sorted(a), sorted(b)
    gap, ia, ib = 0.0, 0, 0
    for x in sorted(set(xa) | set(xb)):
        while ia < len(xa) and xa[ia] <= x:
            ia += 1
        while ib < len(xb) and xb[ib] <= x:
            ib += 1
        gap = max(gap, abs(ia / len(xa) - ib / len(xb)))
    return gap


def mean_by_rank(rows: Sequence[Sequence[float]]) -> list[float]:
    """Mean reward at each rank (best first), over the prompts that have a response at that rank."""
    width = max(len(r) for r in rows)
    return [sum(r[i] for r in rows if len(r) > i) / sum(1 for r in rows if len(r) > i) for i in range(width)]
