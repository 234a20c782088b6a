"""`simulate`: the theory experiments reproduce the papers' shapes."""

import math

import pytest

from rlhfkit.simulate import kl_preference, pm_bias

from conftest import cli, read_jsonl


def test_variance_aware_policy_is_steadier_only_when_variances_differ(tmp_path):
    r = cli("simulate", "variance-aware", "--seed", 0, "--plot", tmp_path / "va.png")
    assert r.exit_code == 0, r.stderr
    got = read_jsonl(r.stdout)[0]
    assert got["high"]["std_ratio_vanilla_over_variance_aware"] > 2
    assert got["low"]["std_ratio_vanilla_over_variance_aware"] < 1.3
    for setting in ("high", "low"):  # both print their stats
        assert {"mean", "std"} <= set(got[setting]["vanilla"]) and {"mean", "std"} <= set(got[setting]["variance_aware"])
    assert (tmp_path / "va.png").read_bytes()[:4] == b"\x89PNG"


def test_kl_optimum_preference_by_hand():
    # σ(logit q + logit p*/β): q = 0.8, p* = 0.7, β = 1 → σ(log 4 + log(7/3)) = 28/31
    assert kl_preference(0.7, 0.8, 1.0) == pytest.approx(28 / 31)
    # uniform reference and β = 1: KL-RLHF matches the true preference, as PM always does
    assert kl_preference(0.3, 0.5, 1.0) == pytest.approx(0.3)
    assert kl_preference(0.9, 0.5, 0.5) == pytest.approx(1 / (1 + math.exp(-2 * math.log(9))))


def test_pm_bias_curves(tmp_path):
    result = pm_bias((0.2, 0.5), (1.0,), points=9)
    assert result["curves"]["pm"] == pytest.approx(result["p_star"])
    assert result["curves"]["kl q=0.5 beta=1.0"] == pytest.approx(result["p_star"])
    assert all(k < p for k, p in zip(result["curves"]["kl q=0.2 beta=1.0"], result["p_star"]))  # reference bias
    r = cli("simulate", "pm-bias", "--plot", tmp_path / "pm.png")
    assert r.exit_code == 0 and (tmp_path / "pm.png").exists()
