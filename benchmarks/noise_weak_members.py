"""What `clean --flip`'s confident rule does when the members are weak (an open defect, issue 12).

Simulated out-of-sample margins, no model: |m| uniform on [0, 3], the members order a pair right
with probability σ(s·|m|) (s = 3: sure of their confident pairs; s = 0.3: accuracy still rising
from 0.5 to 0.71, like minilm members on HH-RLHF), labels flipped at random with rate ε. For each
setting and seed: the noise-rate estimate, how many pairs P(label wrong) ≥ 0.8 picks, the share of
them that are really flipped (precision), and the mean P(label wrong) it claims for them.

    python benchmarks/noise_weak_members.py [--n 2312] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse

import torch

from rlhfkit.clean import CONFIDENCE
from rlhfkit.noise import p_wrong


def simulated(n: int, eps: float, sureness: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    conf = torch.rand(n, generator=g, dtype=torch.float64) * 3
    right = torch.rand(n, generator=g, dtype=torch.float64) < torch.sigmoid(sureness * conf)
    flipped = torch.rand(n, generator=g, dtype=torch.float64) < eps
    return torch.where(right, 1.0, -1.0) * torch.where(flipped, -1.0, 1.0) * conf, flipped


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2312)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = ap.parse_args()
    print("| ε | members' sureness s | seed | ε̂ | flips | precision | claimed |")
    print("|---|---|---|---|---|---|---|")
    for eps in (0.2, 0.3):
        for sureness in (0.3, 1.0, 3.0):
            for seed in a.seeds:
                m, flipped = simulated(a.n, eps, sureness, seed)
                pw, est = p_wrong(m)
                pick = pw >= CONFIDENCE
                k = int(pick.sum())
                precision = f"{flipped[pick].double().mean().item():.2f}" if k else "–"
                claimed = f"{pw[pick].mean().item():.2f}" if k else "–"
                print(f"| {eps} | {sureness} | {seed} | {est:.3f} | {k} | {precision} | {claimed} |")


if __name__ == "__main__":
    main()
