"""The synth world: `rlhfkit sft` builds a policy that writes synth's reviews, and a miniature of the
benchmark's uncertainty and PM experiments runs end to end (structure and interval arithmetic)."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from rlhfkit import synth

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

WORD = "(?:(?:{}) )?(?:{})".format("|".join(synth.INTENSIFIERS), "|".join(synth.POSITIVE + synth.NEGATIVE))
CLAUSE = "(?:{}) was {}".format("|".join(a.replace(" ", " ") for a in synth.ASPECTS), WORD)
REVIEW = re.compile(rf"^{CLAUSE}(?:(?:, {CLAUSE})* and {CLAUSE})?\.$", re.IGNORECASE)


def test_review_pattern_matches_synth_itself():
    """The shape the policy test checks is the shape synth writes (so the test can fail only on the policy)."""
    rows = list(itertools.islice(synth.reviews(200, seed=3), 200))
    assert all(REVIEW.match(r["response"]) for r in rows)
    assert not REVIEW.match("The plot was brilliant brilliant.")
    skewed = [r["gold"] for r in synth.reviews(2000, seed=3, positive_share=0.2)]
    assert statistics.fmean(skewed) < -1.0 < 0.0 < statistics.fmean(r["gold"] for r in synth.reviews(2000, seed=3, positive_share=0.8))


@pytest.fixture(scope="module")
def world_policy(tmp_path_factory) -> Path:
    from rlhfkit.sft import SFTSettings, train_sft

    out = tmp_path_factory.mktemp("world") / "policy"
    pairs = [(r["prompt"], r["response"]) for r in synth.reviews(8000, seed=0)]
    train_sft(SFTSettings(model="synth-world", out=str(out), epochs=2, batch_size=64, lr=3e-3), pairs, progress=False)
    return out


def test_world_policy_writes_reviews(world_policy):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfkit.metrics.sampling import sample_with_logprobs

    AutoModelForCausalLM.from_pretrained(world_policy), AutoTokenizer.from_pretrained(world_policy)  # plain transformers
    prompts = [r["prompt"] for r in synth.pairs(64, 0.0, seed=5)]
    rows = sample_with_logprobs(str(world_policy), prompts, max_new_tokens=48, seed=1, logprobs=False)
    responses = [r["response"] for r in rows]
    shaped = [t for t in responses if REVIEW.match(t)]
    assert len(shaped) >= 0.8 * len(responses), responses[:10]
    words = {w for t in responses for w in t.lower().replace(",", " ").replace(".", " ").split()}
    assert words & set(synth.POSITIVE) and words & set(synth.NEGATIVE)
    assert len({synth.gold_reward(t) for t in responses}) >= 5


def test_sft_cli_pipes_and_rejects_bad_records(tmp_path):
    """`synth --kind reviews | sft -`: stdout stays empty (no trainer logs among records); a record
    without a response is refused with its line and exit status 2, and no model is written."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "The plot was dull."}\n{"prompt": "b"}\n')
    p = subprocess.run([sys.executable, "-m", "rlhfkit", "sft", str(bad), "--model", "synth-world", "--out",
                        str(tmp_path / "m")], capture_output=True, text=True)
    assert p.returncode == 2 and "bad.jsonl:2:" in p.stderr and not (tmp_path / "m").exists()
    cmd = (f"{sys.executable} -m rlhfkit synth --kind reviews --n 64 | {sys.executable} -m rlhfkit sft - "
           f"--model synth-world --batch-size 32 --out {tmp_path / 'm'}")
    p = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout == ""
    assert json.loads(p.stderr.strip().splitlines()[-1])["records"] == 64
    assert (tmp_path / "m" / "config.json").exists() and (tmp_path / "m" / "tokenizer.json").exists()
    assert not (tmp_path / "m" / ".sft-tmp").exists()  # the model was written whole, then moved in


def _bench():
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    import synth_world

    return synth_world


@pytest.fixture(scope="module")
def mini_world(world_policy, tmp_path_factory) -> Path:
    """The benchmark's world directory at miniature size: the test policy as both references, a
    2-head ensemble trained for one epoch, a few prompts."""
    world = tmp_path_factory.mktemp("mini-world")
    shutil.copytree(world_policy, world / "policy")
    shutil.copytree(world_policy, world / "policy-negative")
    pairs = list(synth.pairs(200, 0.2, seed=0))
    (world / "noisy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    p = subprocess.run([sys.executable, "-m", "rlhfkit", "ensemble", str(world / "noisy.jsonl"), "--model",
                        str(world / "policy"), "--heads", "2", "--epochs", "1", "--out", str(world / "ensemble")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    prompts = [r["prompt"] for r in synth.pairs(70, 0.0, seed=11)]
    (world / "train-prompts.jsonl").write_text("".join(json.dumps({"prompt": t}) + "\n" for t in prompts[:64]))
    (world / "eval-prompts.jsonl").write_text("".join(json.dumps({"prompt": t}) + "\n" for t in prompts[64:]))
    return world


def _policy_means(arm: dict, key: str = "gold") -> list[float]:
    return [statistics.fmean(p[key]) for p in arm.values()]


def _check_interval(row: dict, ci_key: str) -> None:
    lo, hi = row[ci_key]
    assert lo <= hi


def test_miniature_uncertainty_experiment(mini_world, tmp_path):
    bench = _bench()
    result = bench.main(["uncertainty", "--world", str(mini_world), "--policies", "2", "--steps", "2", "--pilots", "1",
                         "--kl-tolerance", "1e9", "--result", str(tmp_path / "u.json"), "--no-figure"])
    assert json.loads((tmp_path / "u.json").read_text())["summary"] == json.loads(json.dumps(result["summary"]))
    assert set(result["betas"]) == {"kl", "var-kl"} and all(b > 0 for b in result["betas"].values())
    assert all(len(p) == 3 for p in result["beta_pilots"].values())
    assert set(result["matched_arms"]) == {"kl", "var-kl"}
    arms = {m: result["arms"][k] for m, k in result["matched_arms"].items()}
    assert all(set(a) == {"head0-seed0", "head1-seed0"} for a in arms.values())
    for method, key in result["matched_arms"].items():  # each arm is named by its method and the β it ran at
        assert key.startswith(method + "@") and float(key.split("@")[1]) > 0
    for arm in result["arms"].values():
        assert all(len(p["gold"]) == len(p["kl"]) == len(p["pm_divergence"]) == 6 for p in arm.values())
    summary = result["summary"]
    for method in ("kl", "var-kl"):
        means = _policy_means(arms[method])
        row = summary[method]
        assert row["mean"] == pytest.approx(statistics.fmean(means))
        assert row["variance_across_policies"] == pytest.approx(statistics.variance(means))
        assert row["kl"] == pytest.approx(statistics.fmean(_policy_means(arms[method], "kl")))
        _check_interval(row, "mean_ci95")
        _check_interval(row, "variance_ci95")
        assert row["variance_ci95"][0] >= 0
    diff = summary["var_kl_minus_kl"]
    assert diff["mean"]["value"] == pytest.approx(summary["var-kl"]["mean"] - summary["kl"]["mean"])
    assert diff["variance"]["value"] == pytest.approx(
        summary["var-kl"]["variance_across_policies"] - summary["kl"]["variance_across_policies"])
    assert summary["kl_ratio"] == pytest.approx(summary["var-kl"]["kl"] / summary["kl"]["kl"])
    assert set(summary["frontier"]) == set(result["arms"])
    bench.figure("uncertainty", result, tmp_path / "u.png")
    assert (tmp_path / "u.png").stat().st_size > 0


def test_miniature_pm_experiment(mini_world, tmp_path):
    bench = _bench()
    result = bench.main(["pm", "--world", str(mini_world), "--policies", "2", "--steps", "2", "--betas", "1.0",
                         "--result", str(tmp_path / "pm.json"), "--no-figure"])
    arms = result["arms"]
    assert set(arms) == {f"{r}-{ref}-beta1.0" for r in ("kl", "pm", "cpm") for ref in ("unbiased", "biased")}
    summary = result["summary"]
    for name, arm in arms.items():
        assert summary[name]["pm_divergence"]["mean"] == pytest.approx(statistics.fmean(_policy_means(arm, "pm_divergence")))
        assert all(v >= -1e-9 for p in arm.values() for v in p["pm_divergence"])  # a KL divergence
    for reg in ("kl", "pm", "cpm"):
        gap = summary[f"bias_gap-{reg}-beta1.0"]
        assert gap["value"] == pytest.approx(summary[f"{reg}-unbiased-beta1.0"]["gold"]["mean"]
                                             - summary[f"{reg}-biased-beta1.0"]["gold"]["mean"])
        assert gap["ci95"][0] <= gap["ci95"][1]
    for reg in ("pm", "cpm"):
        d = summary[f"{reg}_minus_kl-unbiased-beta1.0"]
        assert d["value"] == pytest.approx(summary[f"{reg}-unbiased-beta1.0"]["pm_divergence"]["mean"]
                                           - summary["kl-unbiased-beta1.0"]["pm_divergence"]["mean"])
    bench.figure("pm", result, tmp_path / "pm.png")
    assert (tmp_path / "pm.png").stat().st_size > 0


def test_bootstrap_interval_of_a_known_spread():
    """The two-level bootstrap on values with no prompt effect: the interval of the mean across
    policies holds the mean and is about ±1.96 standard errors wide."""
    bench = _bench()
    policies = [[float(i)] * 5 for i in range(40)]  # policy i scores i on every prompt
    lo, hi = bench.bootstrap(lambda P, Q: statistics.fmean(bench.policy_means(policies, P, Q)), 40, 5, draws=4000)
    se = statistics.stdev(range(40)) / 40 ** 0.5
    assert lo < 19.5 < hi
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)
