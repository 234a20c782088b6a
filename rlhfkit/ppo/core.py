"""PPO's math as pure functions over [batch, response-token] tensors (METHODS.md §4).

``mask`` marks real response tokens (1) versus padding after the end (0). Everything here is
independent of models, so each piece is tested against a hand computation.
"""

from __future__ import annotations

import torch

REGULARIZERS = ("kl", "var-kl", "pm", "cpm", "none")


# ---------------------------------------------------------------- regularisers: per-token penalties

def penalty(regularizer: str, logp: torch.Tensor, logp_ref: torch.Tensor | None = None, *, alpha: float = 0.3,
            sigma: torch.Tensor | None = None, power: float = 1.0) -> torch.Tensor:
    """pen_t, subtracted from the reward as −β·pen_t.

    kl:     log π(a_t) − log π_ref(a_t)
    var-kl: σ(x, y)^p · (log π − log π_ref), σ the ensemble's reward std for the whole response
    pm:     log π(a_t)  (preference matching: an entropy bonus, no reference)
    cpm:    log π(a_t) where π_ref(a_t) ≥ α, else log π − log π_ref  (conditional PM, per token)
    none:   0
    """
    if regularizer == "none":
        return torch.zeros_like(logp)
    if regularizer == "pm":
        return logp
    if logp_ref is None:
        raise ValueError(f"the {regularizer} regulariser needs reference log-probabilities")
    kl = logp - logp_ref
    if regularizer == "kl":
        return kl
    if regularizer == "var-kl":
        if sigma is None:
            raise ValueError("the var-kl regulariser needs σ, the ensemble's reward std per response")
        return sigma.unsqueeze(-1).pow(power) * kl
    if regularizer == "cpm":  # compared in log space: exp(log α) can round below α and miss the boundary
        log_alpha = torch.log(torch.tensor(alpha, dtype=logp_ref.dtype, device=logp_ref.device))
        return torch.where(logp_ref >= log_alpha, logp, kl)
    raise ValueError(f"unknown regulariser {regularizer!r}; expected one of {', '.join(REGULARIZERS)}")


# ---------------------------------------------------------------- rewards, advantages, losses

def last_index(mask: torch.Tensor) -> torch.Tensor:
    """Position of each row's last response token."""
    return (mask.sum(-1) - 1).clamp(min=0).long()


def token_rewards(score: torch.Tensor, pen: torch.Tensor, mask: torch.Tensor, beta: float,
                  clip: float | None = 5.0) -> torch.Tensor:
    """r_t = −β·pen_t on every response token, plus the (clipped) sequence score on the last one."""
    r = -beta * pen * mask
    s = score.clamp(-clip, clip) if clip is not None else score
    rows = torch.arange(len(score), device=score.device)
    r[rows, last_index(mask)] += s.to(r.dtype)
    return r


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns; the value after the last token is 0."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    T = rewards.shape[1]
    for t in reversed(range(T)):
        next_value = values[:, t + 1] * mask[:, t + 1] if t + 1 < T else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running * (mask[:, t + 1] if t + 1 < T else 0.0)
        advantages[:, t] = running * mask[:, t]
    returns = advantages + values
    return advantages * mask, returns * mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor, total: torch.Tensor | float | None = None) -> torch.Tensor:
    """Mean over the real tokens; with ``total``, the sum divided by that token count instead (a
    process's share of a mean over tokens spread across processes)."""
    return (x * mask).sum() / (total if total is not None else mask.sum().clamp(min=1))


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True,
           moments: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Normalise to zero mean, unit variance over the real tokens (of every process, when their
    ``moments`` (mean, variance) are given)."""
    if moments is not None:
        mean, var = moments
    else:
        mean = masked_mean(x, mask)
        var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip: float = 0.2, total=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped surrogate: mean of max(−A·ρ, −A·clip(ρ, 1±ε)); also the clip fraction and approx-KL
    (over these tokens). ``total``: the mini-batch's token count over all processes."""
    ratio = (logp - old_logp).exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip, 1 + clip)
    loss = masked_mean(torch.max(unclipped, clipped), mask, total)
    clip_frac = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = masked_mean(0.5 * (logp - old_logp) ** 2, mask)
    return loss, clip_frac.detach(), approx_kl.detach()


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float = 0.2, total=None) -> torch.Tensor:
    """Clipped value loss: ½·mean of max((V − R)², (clip(V, V_old ± ε) − R)²)."""
    v_clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (v_clipped - returns) ** 2), mask, total)


class AdaptiveKL:
    """Ziegler et al.'s controller: β grows when the observed KL exceeds the target, shrinks below it."""

    def __init__(self, beta: float, target: float, horizon: int = 10000):
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, n_steps: int) -> float:
        error = max(-0.2, min(0.2, kl / self.target - 1))
        self.beta *= 1 + error * n_steps / self.horizon
        return self.beta
