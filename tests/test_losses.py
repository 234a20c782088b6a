"""Reward-model losses against hand computations (METHODS.md §1)."""

import math

import pytest
import torch

from rlhfkit.rewards import losses


def t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


def logit(p):
    return math.log(p / (1 - p))


def test_bradley_terry_margin_and_soft_label():
    delta = t(1.0)
    assert losses.pair_loss(delta).item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert losses.pair_loss(delta, margin=t(0.5)).item() == pytest.approx(math.log(1 + math.exp(-0.5)))
    # soft label p = 0.8: 0.8·(−log σ(1)) + 0.2·(−log σ(−1))
    expected = 0.8 * math.log(1 + math.exp(-1)) + 0.2 * math.log(1 + math.exp(1))
    assert losses.pair_loss(delta, label=t(0.8)).item() == pytest.approx(expected)
    # label 1 and margin 0 are plain BT
    assert losses.pair_loss(delta, t(0.0), t(1.0)).item() == pytest.approx(losses.pair_loss(delta).item())


@pytest.mark.parametrize("utility, at_half, at_minus_fifth", [
    ("x", -0.5, 0.2),
    ("log", -math.log(6.0), 2.0),                     # −[log(0.6) − log(0.1)];  0.2 / ε
    ("x_inv", 1 / 0.6 - 10.0, 20.0),                  # 1/(δ+ε) − 1/ε;           0.2 / ε²
    ("logsigmoid", math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(0.8))),
])
def test_utilities_and_their_extension_below_zero(utility, at_half, at_minus_fifth):
    got = losses.utility_loss(t(0.5, -0.2), utility)
    assert got.tolist() == pytest.approx([at_half, at_minus_fifth])


@pytest.mark.parametrize("utility", ["log", "x_inv"])
def test_extension_is_continuous_with_matching_slope_at_zero(utility):
    d = torch.tensor([1e-6, -1e-6], dtype=torch.float64, requires_grad=True)
    values = losses.utility_loss(d, utility)
    values.sum().backward()
    assert values[0].item() == pytest.approx(values[1].item(), abs=1e-3)
    assert d.grad[0].item() == pytest.approx(d.grad[1].item(), rel=1e-3)


def test_ranking_loss_chooses_the_utility_per_record_in_a_mixed_batch():
    # record 0 (closed-ended, x): σ-rewards 0.9, 0.5, 0.2; record 1 (open-ended, x_inv): 0.3 ranked above 0.6
    rewards = t(logit(0.9), logit(0.5), logit(0.2), logit(0.3), logit(0.6))
    better, worse, record = [0, 0, 1, 3], [1, 2, 2, 4], [0, 0, 0, 1]
    got = losses.ranking_loss(rewards, torch.tensor(record), torch.tensor(better), torch.tensor(worse), ["x", "x_inv"])
    record0 = -(0.4 + 0.7 + 0.3) / 3
    record1 = 0.3 / 0.1**2  # δ = −0.3 on the linear extension of x_inv
    assert got.item() == pytest.approx((record0 + record1) / 2)
    # the released code's bug (one utility for the whole batch) would give another number
    bugged = losses.ranking_loss(rewards, torch.tensor(record), torch.tensor(better), torch.tensor(worse), ["x_inv", "x_inv"])
    assert bugged.item() != pytest.approx(got.item())


def test_adaptive_utility_needs_the_flag():
    assert losses.adaptive_utility(True) == "x_inv" and losses.adaptive_utility(False) == "x"
    with pytest.raises(ValueError, match="open_ended"):
        losses.adaptive_utility(None)


def test_simcse_on_orthogonal_views():
    z = torch.eye(2, dtype=torch.float64)
    # each view matches itself with cosine 1 and the other with 0: log(1 + e^{−1/τ})
    assert losses.simcse_loss(z, z, temperature=0.5).item() == pytest.approx(math.log(1 + math.exp(-2.0)))


def test_contrastive_views():
    fc, fr = t(1.0, 2.0).reshape(1, 2), t(0.5, 0.0).reshape(1, 2)
    assert losses.contrastive_views(fc, fr, "pair").tolist() == [[1.0, 2.0], [0.5, 0.0]]
    assert losses.contrastive_views(fc, fr, "diff").tolist() == [[0.5, 2.0], [-0.5, -2.0]]


def test_sinkhorn_balances_assignments():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.2, 0.1], [0.7, 0.0, 0.3], [0.95, 0.05, 0.0]])
    q = losses.sinkhorn(scores, epsilon=0.5, iterations=50)
    assert q.sum(1).tolist() == pytest.approx([1.0] * 4, abs=1e-4)
    assert q.sum(0).tolist() == pytest.approx([4 / 3] * 3, abs=1e-4)


def test_swav_on_aligned_prototypes():
    z = torch.eye(2, dtype=torch.float64)
    # scores = I; codes q_ii = e^{1/ε}/(e^{1/ε}+1); predictions softmax([1/τ, 0])
    q = math.exp(20) / (math.exp(20) + 1)
    log_p_same = -math.log(1 + math.exp(-10))
    log_p_other = -10 + log_p_same
    expected = -(q * log_p_same + (1 - q) * log_p_other)
    assert losses.swav_loss(z, z, z.clone(), temperature=0.1).item() == pytest.approx(expected, rel=1e-6)


def test_metarm_difference_score():
    rewards = t(0.0, 1.0, 3.0, 5.0, 5.0)
    group = torch.tensor([0, 0, 0, 1, 1])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    g0 = 2 / 9 * (sig(1) + sig(3) + sig(2))
    g1 = 2 / 4 * sig(0)
    assert losses.difference_score(rewards, group, 2).item() == pytest.approx((g0 + g1) / 2)


def test_robust_loss_is_unbiased_under_random_flips():
    """Observed labels flipped with probability ε: E[ℓ̃] over the flip equals the clean loss ℓ(Δ)."""
    delta = torch.tensor([-2.0, -0.3, 0.0, 0.7, 3.0], dtype=torch.float64)
    for eps in (0.0, 0.1, 0.2, 0.4):
        expected = (1 - eps) * losses.robust_pair_loss(delta, eps) + eps * losses.robust_pair_loss(-delta, eps)
        assert torch.allclose(expected, losses.pair_loss(delta))
    # by hand at ε = 0.2, Δ = 0: [(0.8 − 0.2)·log 2] / 0.6 = log 2
    assert losses.robust_pair_loss(torch.tensor([0.0]), 0.2).item() == pytest.approx(math.log(2))
    with pytest.raises(ValueError):
        losses.robust_pair_loss(delta, 0.5)


def test_noisy_channel_loss_by_hand_and_at_its_limits():
    """−log[(1 − ε)σ(Δ) + εσ(−Δ)]: plain BT at ε = 0, a constant (no pull) at ε = 1/2."""
    delta = torch.tensor([-3.0, -0.5, 0.0, 1.0, 4.0], dtype=torch.float64)
    assert torch.allclose(losses.noisy_channel_pair_loss(delta, 0.0), losses.pair_loss(delta), atol=1e-5)
    assert torch.allclose(losses.noisy_channel_pair_loss(delta, 0.5), torch.full_like(delta, math.log(2)))
    # by hand, Δ = 2, ε = 0.2: 0.8·σ(2) + 0.2·σ(−2) = 0.8·0.880797 + 0.2·0.119203 = 0.728478
    sig = 1 / (1 + math.exp(-2))
    by_hand = -math.log(0.8 * sig + 0.2 * (1 - sig))
    assert losses.noisy_channel_pair_loss(torch.tensor([2.0], dtype=torch.float64), 0.2).item() == pytest.approx(by_hand)
    # one rate per pair, and a soft label weighs the two outcomes
    per_pair = losses.noisy_channel_pair_loss(delta, torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4], dtype=torch.float64))
    for d, e, got in zip(delta.tolist(), (0.0, 0.1, 0.2, 0.3, 0.4), per_pair.tolist()):
        s = 1 / (1 + math.exp(-d))
        assert got == pytest.approx(-math.log((1 - e) * s + e * (1 - s)), rel=1e-4)
    soft = losses.noisy_channel_pair_loss(delta, 0.2, torch.full_like(delta, 0.7))
    mix = 0.7 * losses.noisy_channel_pair_loss(delta, 0.2) + 0.3 * losses.noisy_channel_pair_loss(-delta, 0.2)
    assert torch.allclose(soft, mix)


def test_noisy_channel_loss_stops_pulling_on_confidently_contradicted_pairs():
    """A wrong label on a pair the model orders right with a large margin: plain BT keeps pulling
    (gradient → 1), the noisy-channel loss lets go (gradient → 0) and is bounded by −log ε."""
    delta = torch.tensor([-12.0], dtype=torch.float64, requires_grad=True)
    losses.pair_loss(delta).sum().backward()
    bt_grad = delta.grad.abs().item()
    delta.grad = None
    value = losses.noisy_channel_pair_loss(delta, 0.2)
    value.sum().backward()
    assert bt_grad > 0.99
    assert delta.grad.abs().item() < 1e-3
    assert value.item() < -math.log(0.2) + 1e-9


def test_noisy_channel_loss_is_minimised_at_the_true_margin():
    """A proper likelihood: with true P(chosen better) = σ(Δ*) and labels flipped at rate ε, the
    expected loss over what the annotator reports is smallest at Δ = Δ*."""
    grid = torch.linspace(-6, 6, 12001, dtype=torch.float64)
    for true_delta, eps in ((1.5, 0.2), (-0.8, 0.1), (3.0, 0.35)):
        p_true = 1 / (1 + math.exp(-true_delta))
        reported_chosen = (1 - eps) * p_true + eps * (1 - p_true)  # P(the annotator says chosen is better)
        expected = (reported_chosen * losses.noisy_channel_pair_loss(grid, eps)
                    + (1 - reported_chosen) * losses.noisy_channel_pair_loss(-grid, eps))
        assert grid[expected.argmin()].item() == pytest.approx(true_delta, abs=2e-3)
