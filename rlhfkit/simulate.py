"""The papers' theory experiments, small enough to run anywhere.

variance_aware: Uncertainty-aware RLHF §3. A true reward r* ∈ R^d, a noisy estimate
R̂ ~ N(r*, Σ) (Σ diagonal), and two policies one step from π0 within a budget ε:
  vanilla      π1 = π0 + sqrt(ε / R̂ᵀR̂) · R̂
  variance-aware π2 = π0 + sqrt(ε̃ / R̂ᵀΣ⁻¹R̂) · Σ⁻¹R̂,  ε̃ = λ_min(Σ)·ε
The return of a policy is r*ᵀπ; over many draws of R̂, π2's return varies far less when the
variances differ a lot, and about as much when they are all alike.

pm_bias: PM RLHF §3. For two responses with true preference p* (Bradley–Terry) and a reference
that prefers the first with probability q, KL-RLHF's optimum π ∝ π_ref·exp(r/β) prefers it with
σ(logit q + logit p* / β); the preference-matching optimum π ∝ exp(r) with p* itself.
"""

from __future__ import annotations

import math

import torch


def variance_aware(dim: int = 1000, var_low: float = 3.0, var_high: float = 100.0, draws: int = 2000,
                   epsilon: float = 1.69, reward_scale: float = 0.1, base_return: float = 4.6, seed: int = 0) -> dict:
    """Returns of π1 (vanilla) and π2 (variance-aware) over ``draws`` reward estimates.

    Our choices (the paper gives none): r*_i ~ N(0, reward_scale²); variances σ_i² ~ U(var_low,
    var_high), fixed per run; π0 = base_return · r*/‖r*‖², so r*ᵀπ0 = base_return.
    """
    g = torch.Generator().manual_seed(seed)
    r_star = torch.randn(dim, generator=g, dtype=torch.float64) * reward_scale
    variances = var_low + (var_high - var_low) * torch.rand(dim, generator=g, dtype=torch.float64)
    pi0 = base_return * r_star / (r_star @ r_star)
    noise = torch.randn(draws, dim, generator=g, dtype=torch.float64) * variances.sqrt()
    r_hat = r_star + noise  # draws x dim
    step1 = (epsilon / (r_hat * r_hat).sum(1, keepdim=True)).sqrt() * r_hat
    weighted = r_hat / variances
    eps_tilde = variances.min() * epsilon
    step2 = (eps_tilde / (r_hat * weighted).sum(1, keepdim=True)).sqrt() * weighted
    ret1 = (pi0 + step1) @ r_star
    ret2 = (pi0 + step2) @ r_star
    return {
        "dim": dim, "variance_range": [var_low, var_high], "draws": draws, "epsilon": epsilon, "seed": seed,
        "vanilla": {"mean": ret1.mean().item(), "std": ret1.std().item()},
        "variance_aware": {"mean": ret2.mean().item(), "std": ret2.std().item()},
        "std_ratio_vanilla_over_variance_aware": (ret1.std() / ret2.std()).item(),
        "returns": {"vanilla": ret1.tolist(), "variance_aware": ret2.tolist()},
    }


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def kl_preference(p_star: float, ref_pref: float, beta: float) -> float:
    """The KL-RLHF optimum's preference for the first response."""
    return 1 / (1 + math.exp(-(logit(ref_pref) + logit(p_star) / beta)))


def pm_bias(ref_prefs=(0.2, 0.5, 0.8), betas=(0.5, 1.0, 2.0), points: int = 99) -> dict:
    grid = [(i + 1) / (points + 1) for i in range(points)]
    curves = {f"kl q={q} beta={b}": [kl_preference(p, q, b) for p in grid] for q in ref_prefs for b in betas}
    curves["pm"] = list(grid)
    return {"p_star": grid, "curves": curves}
