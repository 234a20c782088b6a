"""`metrics`: each number against a hand computation or a read-back of the model's probabilities."""

import math

import pytest
import torch

from rlhfkit.metrics.core import (accuracy_by_subset, generation_stats, ks_statistic, mean_by_rank, pm_divergence,
                                  wasserstein_1d, win_rate)

from conftest import cli, read_jsonl, write_jsonl


def test_pm_divergence_by_hand():
    logp = torch.log(torch.tensor([[0.2, 0.6]]))
    rewards = torch.tensor([[1.0, 0.0]])
    p_llm = [0.25, 0.75]
    p_rew = [math.e / (math.e + 1), 1 / (math.e + 1)]
    expected = sum(p * math.log(p / q) for p, q in zip(p_llm, p_rew))
    assert pm_divergence(logp, rewards, beta=1.0).item() == pytest.approx(expected)
    # β scales the rewards: at β = 2, p_reward = softmax([0.5, 0])
    p_rew2 = [math.exp(0.5) / (math.exp(0.5) + 1), 1 / (math.exp(0.5) + 1)]
    assert pm_divergence(logp, rewards, beta=2.0).item() == pytest.approx(sum(p * math.log(p / q) for p, q in zip(p_llm, p_rew2)))
    # a policy that matches softmax(r) exactly has divergence 0
    assert pm_divergence(torch.tensor([[1.0, 0.0]]), rewards).item() == pytest.approx(0.0, abs=1e-12)


def test_generation_stats_by_hand():
    s = generation_stats(logp=[-2.0, -6.0], ref_logp=[-3.0, -5.0], lengths=[2, 3])
    assert s["length"] == 2.5
    assert s["perplexity"] == pytest.approx((math.exp(1.0) + math.exp(2.0)) / 2)
    assert s["entropy"] == pytest.approx(4.0)
    assert s["kl"] == pytest.approx(0.0)


def test_accuracy_subsets_and_example_weighted_sections():
    correct = [True, False, True, True, True, False]
    subsets = ["a", "a", "b", "b", "b", "c"]
    r = accuracy_by_subset(correct, subsets, {"ab": ["a", "b"], "all": ["a", "b", "c"]})
    assert r["subsets"]["a"] == {"accuracy": 0.5, "n": 2} and r["subsets"]["b"]["accuracy"] == 1.0
    assert r["sections"]["ab"]["accuracy"] == pytest.approx(4 / 5)  # not the mean of 0.5 and 1.0
    assert r["sections"]["all"]["accuracy"] == pytest.approx(4 / 6) == pytest.approx(r["overall"])
    with pytest.raises(ValueError):
        accuracy_by_subset(correct, subsets, {"x": ["missing"]})


def test_win_rate_and_its_bootstrap_interval_on_fixed_counts():
    verdicts = ["A"] * 60 + ["tie"] * 20 + ["B"] * 20
    r = win_rate(verdicts, "A", n_boot=20000, seed=0)
    assert (r["wins"], r["ties"], r["losses"]) == (60, 20, 20)
    assert r["win_rate"] == pytest.approx(0.7)
    # per-pair scores 1, 0.5, 0 have variance 0.16: the normal interval is 0.7 ± 1.96·0.04
    lo, hi = r["ci95"]
    assert lo == pytest.approx(0.7 - 1.96 * 0.04, abs=0.012) and hi == pytest.approx(0.7 + 1.96 * 0.04, abs=0.012)
    assert win_rate(verdicts, "B")["win_rate"] == pytest.approx(0.3)


def test_distribution_distances_by_hand():
    assert wasserstein_1d([0.0, 1.0], [1.0, 2.0]) == pytest.approx(1.0)
    assert wasserstein_1d([0.0, 0.0], [0.0, 0.0]) == 0.0
    assert ks_statistic([0.0, 1.0], [1.0, 2.0]) == pytest.approx(0.5)
    assert mean_by_rank([[3, 2, 1], [5, 0, -1]]) == [4.0, 1.0, 0.0]


def _read_back_logp(model, tok, prompt, response_ids):
    """log π(y|x) by a plain forward pass over the rendered prompt and the sampled tokens."""
    from rlhfkit.ppo.policy import render_prompt

    p_ids = tok(render_prompt(tok, prompt), add_special_tokens=False).input_ids
    ids = torch.tensor([p_ids + response_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0].double(), -1)
    return sum(logprobs[len(p_ids) - 1 + t, tok_id].item() for t, tok_id in enumerate(response_ids))


def length_reward(prompt, response):
    return len(response) / 10


def test_pm_divergence_cli_matches_read_back_probabilities(tmp_path):
    from rlhfkit.metrics.sampling import sample_with_logprobs
    from rlhfkit.models import load_model, load_tokenizer

    prompts = tmp_path / "p.txt"
    prompts.write_text("hello there\nhow are you\nsay something\n")
    r = cli("metrics", "pm-divergence", "--policy", "tiny-gpt", "--reward", f"{__file__}:length_reward", "--prompts",
            prompts, "--beta", 0.5, "--max-new-tokens", 6, "--seed", 3, "--plot", tmp_path / "pm.png")
    assert r.exit_code == 0, r.stderr
    got = read_jsonl(r.stdout)[0]
    samples = sample_with_logprobs("tiny-gpt", ["hello there", "how are you", "say something"], 2, max_new_tokens=6, seed=3)
    model, tok = load_model("tiny-gpt"), load_tokenizer("tiny-gpt")
    for k in range(3):
        a, b = samples[2 * k], samples[2 * k + 1]
        la, lb = (_read_back_logp(model, tok, s["prompt"], s["response_ids"]) for s in (a, b))
        assert la == pytest.approx(a["logp"], abs=1e-4)
        pa = math.exp(la) / (math.exp(la) + math.exp(lb))
        ra, rb = length_reward("", a["response"]) / 0.5, length_reward("", b["response"]) / 0.5
        qa = math.exp(ra) / (math.exp(ra) + math.exp(rb))
        expected = pa * math.log(pa / qa) + (1 - pa) * math.log((1 - pa) / (1 - qa))
        assert got["values"][k] == pytest.approx(expected, abs=1e-4)
    assert (tmp_path / "pm.png").read_bytes()[:4] == b"\x89PNG"


def test_generation_metrics_read_back_and_zero_kl_against_itself(tmp_path):
    from rlhfkit.metrics.sampling import sample_with_logprobs
    from rlhfkit.models import load_model, load_tokenizer

    prompts = tmp_path / "p.txt"
    prompts.write_text("a\nb\n")
    r = cli("metrics", "generation", "--policy", "tiny-gpt", "--ref", "tiny-gpt", "--prompts", prompts,
            "--samples", 3, "--max-new-tokens", 5, "--seed", 1)
    assert r.exit_code == 0, r.stderr
    got = read_jsonl(r.stdout)[0]
    assert got["kl"] == pytest.approx(0.0, abs=1e-9)
    samples = sample_with_logprobs("tiny-gpt", ["a", "b"], 3, ref="tiny-gpt", max_new_tokens=5, seed=1)
    model, tok = load_model("tiny-gpt"), load_tokenizer("tiny-gpt")
    logps = [_read_back_logp(model, tok, s["prompt"], s["response_ids"]) for s in samples]
    lengths = [len(s["response_ids"]) for s in samples]
    assert got["entropy"] == pytest.approx(-sum(logps) / 6, abs=1e-4)
    assert got["perplexity"] == pytest.approx(sum(math.exp(-lp / n) for lp, n in zip(logps, lengths)) / 6, rel=1e-4)
    assert got["length"] == pytest.approx(sum(lengths) / 6)


def test_accuracy_reward_dist_and_winrate_through_the_cli(tmp_path):
    from rlhfkit import synth

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [dict(r, subset="s1" if i % 3 else "s2")
                                                    for i, r in enumerate(synth.pairs(30, 0.0, seed=0))])
    assert cli("train-rm", pairs, "--model", "tiny-gpt", "--out", tmp_path / "rm", "--max-steps", 2, "--save-steps", 0).exit_code == 0
    r = cli("metrics", "accuracy", pairs, "--reward", tmp_path / "rm", "--section", "both=s1,s2")
    assert r.exit_code == 0, r.stderr
    acc = read_jsonl(r.stdout)[0]
    scored = read_jsonl(cli("score", pairs, "--reward", tmp_path / "rm").stdout)
    correct = [s["reward_chosen"] > s["reward_rejected"] for s in scored]
    assert acc["overall"] == pytest.approx(sum(correct) / 30)
    assert acc["subsets"]["s2"]["n"] == 10 and acc["sections"]["both"]["accuracy"] == pytest.approx(acc["overall"])

    ranks = write_jsonl(tmp_path / "ranks.jsonl", synth.rankings(12, 4, seed=0))
    r = cli("metrics", "reward-dist", ranks, "--reward", tmp_path / "rm", "--plot", tmp_path / "rd.png")
    assert r.exit_code == 0, r.stderr
    dist = read_jsonl(r.stdout)[0]
    assert set(dist["groups"]) == {"True", "False"} and dist["distance"]["wasserstein"] >= 0
    assert (tmp_path / "rd.png").exists()

    judged = write_jsonl(tmp_path / "j.jsonl", [{"verdict": v} for v in ["A"] * 6 + ["B"] * 2 + ["tie"] * 2] + [{"verdict": None}])
    r = cli("metrics", "winrate", judged)
    w = read_jsonl(r.stdout)[0]
    assert w["win_rate"] == pytest.approx(0.7) and w["failed"] == 1 and w["n"] == 10
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"verdict": "maybe"}])
    r = cli("metrics", "winrate", bad)
    assert r.exit_code == 2 and f"{bad}:1" in r.stderr
