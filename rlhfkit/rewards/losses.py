"""Reward-model losses as pure functions over tensors (METHODS.md §1).

Notation: ``delta`` = r(chosen) − r(rejected), one value per pair.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS_UTILITY = 0.1
UTILITIES = ("x", "log", "x_inv", "logsigmoid")


# ---------------------------------------------------------------- pairwise

def pair_loss(delta: torch.Tensor, margin: torch.Tensor | None = None, label: torch.Tensor | None = None) -> torch.Tensor:
    """Bradley–Terry with an optional margin inside σ and an optional soft label, per pair.

    −[p·log σ(Δ − m) + (1 − p)·log σ(−(Δ − m))]; p = 1 and m = 0 give plain BT, −log σ(Δ).
    """
    z = delta if margin is None else delta - margin
    if label is None:
        return -F.logsigmoid(z)
    return -(label * F.logsigmoid(z) + (1 - label) * F.logsigmoid(-z))


def robust_pair_loss(delta: torch.Tensor, noise_rate: float, label: torch.Tensor | None = None) -> torch.Tensor:
    """The unbiased Bradley–Terry loss under labels flipped at random with rate ε (Chowdhury, Kini &
    Natarajan, Provably Robust DPO, ICML 2024), per pair:

        ℓ̃(Δ) = [(1 − ε)·ℓ(Δ) − ε·ℓ(−Δ)] / (1 − 2ε),   ℓ(Δ) = −log σ(Δ)  (soft labels: ℓ = pair_loss)

    Its expectation over the random flips is the clean-label loss, for any ε < 1/2.
    """
    if not 0 <= noise_rate < 0.5:
        raise ValueError(f"the noise rate must lie in [0, 0.5), got {noise_rate}")
    given = pair_loss(delta, label=label)
    flipped = pair_loss(-delta, label=label)
    return ((1 - noise_rate) * given - noise_rate * flipped) / (1 - 2 * noise_rate)


def noisy_channel_pair_loss(delta: torch.Tensor, flip_prob: torch.Tensor | float,
                            label: torch.Tensor | None = None) -> torch.Tensor:
    """Bradley–Terry seen through a noisy annotator (forward correction, Patrini et al. 2017), per pair:

        P(label as given) = (1 − ε)·σ(Δ) + ε·σ(−Δ),   ℓ = −log P(label as given)

    with ε the chance the label was flipped (one rate, or one per pair). Unlike plain BT, a pair the
    model confidently orders against its label costs at most −log ε and stops pulling: wrong labels
    cannot drag the model once it has learnt the truth. ε = 0 is plain BT; ε = 1/2 ignores the pair.
    A soft label p weighs the two outcomes: −[p·log P(as given) + (1 − p)·log P(swapped)].
    """
    eps = torch.as_tensor(flip_prob, dtype=delta.dtype, device=delta.device).clamp(1e-6, 1 - 1e-6)

    def log_p(d):  # log P(the annotator states the order whose margin is d)
        return torch.logaddexp(torch.log1p(-eps) + F.logsigmoid(d), torch.log(eps) + F.logsigmoid(-d))

    if label is None:
        return -log_p(delta)
    return -(label * log_p(delta) + (1 - label) * log_p(-delta))


# ---------------------------------------------------------------- ranking utilities (Reward Collapse)

def utility_loss(delta: torch.Tensor, utility: str, eps: float = EPS_UTILITY) -> torch.Tensor:
    """Per-pair loss −U(δ) for δ = σ(r_i) − σ(r_j) ∈ (−1, 1), i ranked above j.

    Each U is continued linearly below zero with its slope at zero, so gradients keep flowing
    when a pair is ordered the wrong way.
    """
    pos = delta > 0
    safe = delta.clamp(min=0)  # keeps the unused branch finite (no NaN gradients through where)
    if utility == "x":
        return -delta
    if utility == "log":
        return torch.where(pos, -(torch.log(safe + eps) - torch.log(torch.tensor(eps))), -delta / eps)
    if utility == "x_inv":
        return torch.where(pos, 1.0 / (safe + eps) - 1.0 / eps, -delta / eps**2)
    if utility == "logsigmoid":
        return -F.logsigmoid(4.0 * delta)
    raise ValueError(f"unknown utility {utility!r}; expected one of {UTILITIES} or 'adaptive'")


def ranking_loss(
    rewards: torch.Tensor,
    record_index: torch.Tensor,
    better: torch.Tensor,
    worse: torch.Tensor,
    utilities: list[str],
) -> torch.Tensor:
    """Mean over records of the mean pair loss of each record's utility.

    ``rewards`` are raw logits for every response in the batch; ``better``/``worse`` index into
    them, ``record_index`` says which record each pair belongs to, and ``utilities[k]`` is
    record k's utility (the prompt-aware scheme picks it per record, never per batch).
    """
    s = torch.sigmoid(rewards)
    delta = s[better] - s[worse]
    per_pair = torch.empty_like(delta)
    for name in set(utilities):
        in_group = torch.tensor([utilities[k] == name for k in record_index.tolist()], device=delta.device)
        per_pair = torch.where(in_group, utility_loss(delta, name), per_pair)
    n_records = len(utilities)
    sums = torch.zeros(n_records, device=delta.device, dtype=delta.dtype).index_add(0, record_index, per_pair)
    counts = torch.zeros(n_records, device=delta.device, dtype=delta.dtype).index_add(
        0, record_index, torch.ones_like(per_pair))
    return (sums / counts.clamp(min=1))[counts > 0].mean()


def adaptive_utility(open_ended: bool | None, open_utility: str = "x_inv", closed_utility: str = "x") -> str:
    """The prompt-aware choice: spread-out rewards for open-ended prompts, polarised otherwise."""
    if open_ended is None:
        raise ValueError("the adaptive utility needs an 'open_ended' field on every ranking record")
    return open_utility if open_ended else closed_utility


# ---------------------------------------------------------------- contrastive (Secrets II §3.1)

def contrastive_views(f_chosen: torch.Tensor, f_rejected: torch.Tensor, features: str) -> torch.Tensor:
    """The representations contrasted: pair features {f_c, f_r} or difference features {f_c − f_r, f_r − f_c}."""
    if features == "pair":
        return torch.cat([f_chosen, f_rejected])
    if features == "diff":
        d = f_chosen - f_rejected
        return torch.cat([d, -d])
    raise ValueError(f"contrastive features must be 'pair' or 'diff', got {features!r}")


def simcse_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """InfoNCE over the batch: view 1 of item i must pick view 2 of item i by cosine similarity."""
    sim = F.cosine_similarity(z1.unsqueeze(1), z2.unsqueeze(0), dim=-1) / temperature
    return F.cross_entropy(sim, torch.arange(len(z1), device=z1.device))


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Balanced soft assignments of N items to K prototypes (rows sum to 1, columns to N/K)."""
    q = torch.exp((scores - scores.max()) / epsilon).T  # K x N
    q /= q.sum()
    k, n = q.shape
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True) * k
        q /= q.sum(dim=0, keepdim=True) * n
    return (q * n).T


def swav_loss(z1: torch.Tensor, z2: torch.Tensor, prototypes: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Swapped prediction: each view predicts the Sinkhorn codes of the other view."""
    c = F.normalize(prototypes, dim=-1)
    s1, s2 = F.normalize(z1, dim=-1) @ c.T, F.normalize(z2, dim=-1) @ c.T
    q1, q2 = sinkhorn(s1), sinkhorn(s2)
    p1, p2 = F.log_softmax(s1 / temperature, dim=-1), F.log_softmax(s2 / temperature, dim=-1)
    return -0.5 * ((q2 * p1).sum(-1).mean() + (q1 * p2).sum(-1).mean())


# ---------------------------------------------------------------- MetaRM (Secrets II §3.2)

def difference_score(rewards: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """J = mean over prompts of (2/k²) Σ_{i<j} σ(|r_i − r_j|) for the k responses of each prompt."""
    total = rewards.new_zeros(())
    for g in range(n_groups):
        r = rewards[group == g]
        k = len(r)
        diff = (r.unsqueeze(0) - r.unsqueeze(1)).abs()
        upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=r.device), diagonal=1)
        total = total + (2.0 / k**2) * torch.sigmoid(diff[upper]).sum()
    return total / n_groups
