"""What `clean --flip`'s confident rule does when the members are weak (issue 12's HH-RLHF defect).

Simulated out-of-sample margins, no model: confidence |m| uniform on [0, 3]; the members order a
pair right with probability acc(|m|); labels flipped at random with rate ε. Member shapes:

  sure      σ(3|m|)            sure of their confident half (what synth's minilm members look like)
  medium    σ(|m|)             0.5 → 0.95, still rising at the top
  weak      σ(0.3|m|)          0.5 → 0.71, like minilm members on HH-RLHF
  linear    0.5 + 0.1|m|       0.5 → 0.80
  sqrt      0.5 + 0.25√|m|     0.5 → 0.93, rising fastest at first

For each cell (three seeds): how many pairs each rule flips (P(label wrong) ≥ 0.8) and the share
of them really flipped (precision):
  plateau   the estimate alone, as before this round (decides nothing only at ε̂ ≥ 0.45)
  default   today's rule: the same estimate, refused (nothing flipped) when it is 0.30 or more or
            when disagreement still falls across the confident half (noise.why_undecidable)
  known ε   `clean --noise-rate ε`: the true rate given, no estimate; with the largest ECE of its
            P(label wrong) over the seeds (against the real flips)

    python benchmarks/noise_weak_members.py [--n 1000 2312] [--seeds 0 1 2] > results/noise_weak_members.md
"""

from __future__ import annotations

import argparse

import torch

from rlhfkit.cleaning.clean import CONFIDENCE
from rlhfkit.cleaning.noise import calibration, noise_rate, p_wrong, why_undecidable

SHAPES = {
    "sure": lambda c: torch.sigmoid(3 * c),
    "medium": lambda c: torch.sigmoid(c),
    "weak": lambda c: torch.sigmoid(0.3 * c),
    "linear": lambda c: 0.5 + 0.1 * c,
    "sqrt": lambda c: 0.5 + 0.25 * c.sqrt(),
}
OLD_GUARD = 0.45  # the plateau rule decided nothing only above this


def simulated(n: int, eps: float, shape: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    conf = torch.rand(n, generator=g, dtype=torch.float64) * 3
    right = torch.rand(n, generator=g, dtype=torch.float64) < SHAPES[shape](conf)
    flipped = torch.rand(n, generator=g, dtype=torch.float64) < eps
    return torch.where(right, 1.0, -1.0) * torch.where(flipped, -1.0, 1.0) * conf, flipped


def flips(pw: torch.Tensor, flipped: torch.Tensor) -> tuple[int, float | None]:
    pick = pw >= CONFIDENCE
    k = int(pick.sum())
    return k, (flipped[pick].double().mean().item() if k else None)


def cell(flip_counts: list[tuple[int, float | None]]) -> str:
    """'flips (precision)' per seed, e.g. '346 (0.00) · 0 · 12 (0.92)'."""
    return " · ".join(f"{k} ({p:.2f})" if k else "0" for k, p in flip_counts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 2312])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3])
    a = ap.parse_args()
    print(f"# python benchmarks/noise_weak_members.py --n {' '.join(map(str, a.n))} (CPU, seconds)\n")
    print("Flips (precision) per seed; the default's refusals counted under 'refused'.\n")
    print("| n | ε | members | ε̂ per seed | plateau | default | refused | known ε | known ε: ECE ≤ |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in a.n:
        for eps in a.noise:
            for shape in SHAPES:
                est, old, new, known, refused, ece = [], [], [], [], 0, 0.0
                for seed in a.seeds:
                    m, flipped = simulated(n, eps, shape, seed)
                    e = noise_rate(m)
                    est.append(f"{e:.2f}")
                    old.append(flips(p_wrong(m, e)[0], flipped) if e < OLD_GUARD else (0, None))
                    new.append(flips(p_wrong(m)[0], flipped))
                    refused += why_undecidable(m, e) is not None
                    given = p_wrong(m, eps)[0]
                    known.append(flips(given, flipped) if eps > 0 else (0, None))
                    ece = max(ece, calibration(given.tolist(), flipped.tolist())[0])
                print(f"| {n} | {eps} | {shape} | {' '.join(est)} | {cell(old)} | {cell(new)} | "
                      f"{refused}/{len(a.seeds)} | {cell(known)} | {ece:.3f} |")


if __name__ == "__main__":
    main()
