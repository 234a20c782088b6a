"""The synth world: `rlhfkit sft` builds a policy that writes synth's reviews, and a miniature of the
benchmark's uncertainty and PM experiments runs end to end (structure and interval arithmetic)."""

from __future__ import annotations

import itertools
import json
import math
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
    2-head ensemble trained for one epoch, two independently trained reward models, noisy /
    cleaned / gold-label reward models (and a second data draw's, copied), a few prompts."""
    from rlhfkit.cli import app  # noqa: F401  (in-process runs below through conftest's cli)
    from conftest import cli

    world = tmp_path_factory.mktemp("mini-world")
    shutil.copytree(world_policy, world / "policy")
    shutil.copytree(world_policy, world / "policy-negative")
    for name, noise, seed in (("noisy", 0.2, 0), ("cleaned", 0.1, 0), ("gold-labels", 0.0, 0)):
        (world / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in synth.pairs(120, noise, seed=seed)))
    r = cli("ensemble", world / "noisy.jsonl", "--model", world / "policy", "--heads", 2, "--epochs", 1,
            "--out", world / "ensemble")
    assert r.exit_code == 0, r.stderr[-2000:]
    train = ["--model", world / "policy", "--epochs", 1, "--batch-size", 32, "--lr", "1e-3", "--save-steps", 0]
    for name, data, seed in (("rm-noisy", "noisy", 0), ("rm-cleaned", "cleaned", 0), ("rm-gold-labels", "gold-labels", 0),
                             ("rm-noisy-seed1", "noisy", 1), ("rm-noisy-seed2", "noisy", 2)):
        r = cli("train-rm", world / f"{data}.jsonl", *train, "--seed", seed, "--out", world / name)
        assert r.exit_code == 0, r.stderr[-2000:]
    r = cli("ensemble", "--members", world / "rm-noisy-seed1", "--members", world / "rm-noisy-seed2",
            "--out", world / "ensemble-models")
    assert r.exit_code == 0, r.stderr[-2000:]
    for name in ("noisy", "cleaned", "gold-labels"):  # a second data draw: here the first one's models, copied
        shutil.copytree(world / f"rm-{name}", world / "replicate1" / f"rm-{name}")
        (world / "replicate1" / f"{name}.jsonl").write_text((world / f"{name}.jsonl").read_text())
    prompts = [r["prompt"] for r in synth.pairs(70, 0.0, seed=11)]
    (world / "train-prompts.jsonl").write_text("".join(json.dumps({"prompt": t}) + "\n" for t in prompts[:64]))
    (world / "eval-prompts.jsonl").write_text("".join(json.dumps({"prompt": t}) + "\n" for t in prompts[64:]))
    return world


def _policy_means(arm: dict, key: str = "gold") -> list[float]:
    return [statistics.fmean(p[key]) for p in arm.values()]


def _inside(row: dict, key: str) -> None:
    """The point estimate lies in its own 95% interval (a resampling of the wrong thing breaks this)."""
    lo, hi = row[key + "_ci95"] if key + "_ci95" in row else row["ci95"]
    value = row[key] if key in row else row["value"]
    assert lo - 1e-9 <= value <= hi + 1e-9, (key, value, lo, hi)


def _corrected_beta(pilots: dict, beta: float, achieved_kl: float, target: float) -> float:
    """The matching rule by hand: move log β along the pilots' log KL – log β line to the target."""
    points = sorted((math.log(float(b)), math.log(max(k, 1e-3))) for b, k in pilots.items())
    slope = (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])
    slope = slope if slope < -0.05 else -1.0
    log_beta = math.log(beta) + (math.log(target) - math.log(max(achieved_kl, 1e-3))) / slope
    return math.exp(min(math.log(100.0), max(math.log(1e-4), log_beta)))


def _kl(arm: dict) -> float:
    return statistics.fmean(_policy_means(arm, "kl"))


@pytest.fixture(scope="module")
def mini_uncertainty(mini_world, tmp_path_factory):
    """Exploratory uncertainty miniature: 2 heads x 2 seeds per arm, β tuned, then corrected once."""
    bench = _bench()
    path = tmp_path_factory.mktemp("u") / "u.json"
    result = bench.main(["uncertainty", "--draws", "200", "--world", str(mini_world), "--seeds", "0:2", "--steps", "2", "--pilots", "1",
                         "--target-kl", "0.05", "--kl-tolerance", "0.001", "--kl-standard-errors", "0", "--kl-rounds", "2", "--result", str(path),
                         "--no-figure"])
    return result, path


def test_miniature_uncertainty_experiment(mini_uncertainty, tmp_path):
    bench = _bench()
    result, path = mini_uncertainty
    assert json.loads(path.read_text())["summary"] == json.loads(json.dumps(result["summary"]))
    assert all(len(p) == 3 for p in result["beta_pilots"].values())
    names = {f"head{h}-seed{s}" for h in (0, 1) for s in (0, 1)}
    target = 0.05
    for method in ("var-kl", "kl"):  # the β correction: a second arm at the β the rule gives, unless the first matched
        keys = [k for k in result["arms"] if k.startswith(method + "@")]
        assert all(set(result["arms"][k]) == names for k in keys)
        if method == "var-kl" or len(keys) == 2:
            first, second = keys
            expected = _corrected_beta(result["beta_pilots"][method], float(first.split("@")[1]),
                                       _kl(result["arms"][first]), target)
            assert float(second.split("@")[1]) == pytest.approx(expected, rel=1e-3)
        else:  # near β = 0 both regularisers vanish: the same seeds give var-KL's policies, matched at once
            assert abs(_kl(result["arms"][keys[0]]) / target - 1) <= 0.001
        target = _kl(result["arms"][result["matched_arms"]["var-kl"]])
    summary = result["summary"]
    for method in ("kl", "var-kl"):
        arm = result["arms"][result["matched_arms"][method]]
        means = _policy_means(arm)
        row = summary[method]
        assert row["mean"] == pytest.approx(statistics.fmean(means))
        assert row["variance_across_policies"] == pytest.approx(statistics.variance(means))
        heads = [[statistics.fmean(arm[f"head{h}-seed{s}"]["gold"]) for s in (0, 1)] for h in (0, 1)]
        head_means = [statistics.fmean(v) for v in heads]
        assert row["variance_between_reward_models"] == pytest.approx(statistics.pvariance(head_means))
        assert row["variance_within_reward_models"] == pytest.approx(statistics.fmean(statistics.pvariance(v) for v in heads))
        assert row["kl_median"] == pytest.approx(statistics.median(_policy_means(arm, "kl")))
        for key in ("mean", "variance_across_policies", "iqr", "variance_between_reward_models"):
            _inside(row, key)
        _inside(row, "variance_within_reward_models")  # whole reward models are resampled, their seeds kept
    diff = summary["var_kl_minus_kl"]
    assert diff["variance"]["value"] == pytest.approx(
        summary["var-kl"]["variance_across_policies"] - summary["kl"]["variance_across_policies"])
    assert diff["variance_within_reward_models"]["value"] == pytest.approx(
        summary["var-kl"]["variance_within_reward_models"] - summary["kl"]["variance_within_reward_models"])
    _inside(diff["mean"], "value")
    assert set(summary["frontier"]) == set(result["arms"])
    bench.figure("uncertainty", result, tmp_path / "u.png")
    bench.frontier_figure(result, tmp_path / "f.png")
    assert (tmp_path / "u.png").stat().st_size > 0 and (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


def test_a_confirmatory_run_fixes_its_plan_first_and_refuses_used_seeds(mini_world, mini_uncertainty, tmp_path, monkeypatch):
    bench = _bench()
    explored, path = mini_uncertainty
    confirm = tmp_path / "c.json"
    with pytest.raises(SystemExit, match="seeds \\[1\\] were used"):
        bench.main(["uncertainty", "--draws", "200", "--world", str(mini_world), "--confirm", str(path), "--seeds", "1:3",
                    "--steps", "2", "--result", str(confirm), "--no-figure"])
    real_run_arm, seen = bench.run_arm, []

    def run_arm(result, out, *args, **kwargs):
        seen.append(json.loads(Path(out).read_text())["protocol"])  # on disk before any policy trains
        return real_run_arm(result, out, *args, **kwargs)

    monkeypatch.setattr(bench, "run_arm", run_arm)
    result = bench.main(["uncertainty", "--draws", "200", "--world", str(mini_world), "--confirm", str(path), "--seeds", "2:3",
                         "--steps", "3", "--result", str(confirm), "--no-figure"])
    plan = seen[0]
    assert plan["settings"] == {"steps": 2, "construction": "heads"} == result["settings"]  # the exploratory design
    assert plan["betas"] == {m: float(k.split("@")[1]) for m, k in explored["matched_arms"].items()}
    assert plan["seeds"] == [2] and plan["prediction"] == "negative"
    assert plan["exploratory_seeds"] == [0, 1, 1000, 1001, 1002]  # the policies' seeds and the β pilots
    assert set(result["arms"]) == {f"{m}@{b}" for m, b in plan["betas"].items()}  # no tuning, no matching
    v = result["verdict"]
    lo, hi = result["summary"]["var_kl_minus_kl"]["variance"]["ci95"]
    assert v["verdict"] == ("confirmed" if hi < 0 else "not confirmed")
    changed = json.loads(path.read_text())
    changed["matched_arms"]["kl"] = "kl@9.0"
    (tmp_path / "other.json").write_text(json.dumps(changed))
    with pytest.raises(SystemExit, match="another protocol"):
        bench.main(["uncertainty", "--draws", "200", "--world", str(mini_world), "--confirm", str(tmp_path / "other.json"), "--seeds", "2:3",
                    "--steps", "2", "--result", str(confirm), "--no-figure"])


def test_miniature_uncertainty_with_independently_trained_reward_models(mini_world, tmp_path):
    bench = _bench()
    result = bench.main(["uncertainty", "--draws", "200", "--world", str(mini_world), "--construction", "models", "--seeds", "0:1",
                         "--steps", "2", "--beta", "var-kl=0.5", "--beta", "var-kl=0.2", "--beta", "kl=0.3",
                         "--result", str(tmp_path / "m.json"), "--no-figure"])
    assert set(result["arms"]) == {"var-kl@0.5", "var-kl@0.2", "kl@0.3"}  # the frontier: fixed β, no tuning
    assert result["construction"] == "models" and result["summary"]["var-kl"]["reward_models"] == 2
    assert result["summary"]["frontier"]["var-kl@0.2"]["kl"] == pytest.approx(_kl(result["arms"]["var-kl@0.2"]))


def test_miniature_pm_experiment(mini_world, tmp_path):
    bench = _bench()
    result = bench.main(["pm", "--draws", "200", "--world", str(mini_world), "--seeds", "0:1", "--steps", "2", "--betas", "1.0", "0.1",
                         "--result", str(tmp_path / "pm.json"), "--no-figure"])
    arms = result["arms"]
    assert set(arms) == {f"{r}-{ref}-beta{b}" for r in ("kl", "pm", "cpm") for ref in ("unbiased", "biased") for b in (1.0, 0.1)}
    summary = result["summary"]
    for name, arm in arms.items():
        assert summary[name]["pm_divergence"]["mean"] == pytest.approx(statistics.fmean(_policy_means(arm, "pm_divergence")))
        assert all(v >= -1e-9 for p in arm.values() for v in p["pm_divergence"])  # a KL divergence
    gap = lambda b: (summary[f"kl-unbiased-beta{b}"]["gold"]["mean"] - summary[f"kl-biased-beta{b}"]["gold"]["mean"])
    for b in (1.0, 0.1):
        assert summary[f"kl_gap-beta{b}"]["value"] == pytest.approx(gap(b))
        opt = summary["kl_optimum"]
        closed = opt[f"unbiased-beta{b}"]["gold_kl_optimum"] - opt[f"biased-beta{b}"]["gold_kl_optimum"]
        assert summary[f"kl_optimum_gap-beta{b}"]["value"] == pytest.approx(closed)
        assert summary[f"kl_gap_minus_optimum-beta{b}"]["value"] == pytest.approx(gap(b) - closed)
        _inside(summary[f"kl_gap-beta{b}"], "value")
        _inside(summary[f"kl_optimum_gap-beta{b}"], "value")
    assert summary["kl_gap_change"]["value"] == pytest.approx(gap(0.1) - gap(1.0))
    theory = json.loads((tmp_path / "pm.json").read_text())["kl_optimum"]["unbiased-beta1.0"]
    gold = [g for pairs in theory["gold_counts_by_prompt"] for g, c in pairs for _ in range(c)]
    assert len(gold) == theory["samples"]
    w = [math.exp(g / 1.0) for g in gold]  # the optimum by hand: weights exp(r / β)
    assert theory["gold_kl_optimum"] == pytest.approx(sum(a * g for a, g in zip(w, gold)) / sum(w))
    draws = bench.optimum_draws(theory, 1.0, draws=200)  # the reweighting's own uncertainty is resampled
    assert min(draws) < theory["gold_kl_optimum"] < max(draws)
    bench.figure("pm", result, tmp_path / "pm.png")
    assert (tmp_path / "pm.png").stat().st_size > 0


def test_miniature_cleaning_experiment(mini_world, tmp_path):
    bench = _bench()
    result = bench.main(["cleaning", "--draws", "200", "--world", str(mini_world), "--seeds", "0:2", "--replicates", "2", "--steps", "2",
                         "--pilots", "1", "--target-kl", "0.05", "--kl-tolerance", "0.001", "--kl-standard-errors", "0", "--kl-rounds", "2",
                         "--result", str(tmp_path / "c.json"),
                         "--no-figure"])
    keys = [k for k in result["arms"] if k.startswith("noisy@")]
    assert len(keys) == 2  # the β correction ran
    assert float(keys[1].split("@")[1]) == pytest.approx(
        _corrected_beta(result["beta_pilots"]["noisy"], float(keys[0].split("@")[1]), _kl(result["arms"][keys[0]]), 0.05), rel=1e-3)
    summary = result["summary"]
    arms = {d: result["arms"][k] for d, k in result["matched_arms"].items()}
    mean = {d: statistics.fmean(_policy_means(a)) for d, a in arms.items()}
    assert summary["cleaned_minus_noisy"]["value"] == pytest.approx(mean["cleaned"] - mean["noisy"])
    share = summary["share_of_oracle_gain"]
    assert share["value"] == pytest.approx((mean["cleaned"] - mean["noisy"]) / (mean["gold-labels"] - mean["noisy"]))
    assert summary["noisy"]["reward_models"] == 2 and summary["noisy"]["policies"] == 2
    _inside(summary["cleaned_minus_noisy"], "value")


def test_miniature_overopt_experiment(mini_world, tmp_path):
    bench = _bench()
    result = bench.main(["overopt", "--draws", "200", "--world", str(mini_world), "--seeds", "0:3", "--steps", "4", "--proxy-pairs", "60",
                         "--result", str(tmp_path / "o.json"), "--no-figure"])
    assert result["proxy"] == "rm-noisy-60" and (mini_world / "rm-noisy-60" / "rlhfkit.json").exists()
    assert result["draws"] == 200
    summary = result["summary"]
    assert set(result["runs"]) == {"0", "1", "2"} and all(len(r) == 4 for r in result["runs"].values())
    peak = max(summary["bins"], key=lambda b: b["gold"])
    assert summary["gold_peak_sqrt_kl"] == peak["sqrt_kl"] and summary["gold_at_end"] == summary["bins"][-1]["gold"]
    fall = summary["gold_fall"]
    if fall["ci95"] is not None:
        _inside(fall, "value")
        assert summary["gold_falls_after_peak"] == (fall["ci95"][1] < 0)
    confirmed = bench.main(["overopt", "--draws", "200", "--world", str(mini_world), "--confirm", str(tmp_path / "o.json"), "--seeds", "3:5",
                            "--steps", "2", "--result", str(tmp_path / "oc.json"), "--no-figure"])
    assert confirmed["settings"] == {"steps": 4, "proxy_pairs": 60}  # the exploratory design, not the command line's
    assert confirmed["proxy"] == "rm-noisy-60" and {len(r) for r in confirmed["runs"].values()} == {4}
    assert confirmed["protocol"]["peak_sqrt_kl"] == summary["gold_peak_sqrt_kl"]
    assert confirmed["verdict"]["statistic"] == "gold_fall"


def test_a_kl_gap_inside_the_arms_noise_counts_as_matched():
    bench = _bench()
    heavy = [2.0, 2.1, 2.2, 2.3, 9.0]  # mean 3.52, standard error 1.37: one drifting policy
    tight = [3.4, 3.5, 3.5, 3.6, 3.6]  # mean 3.52, standard error 0.04
    assert bench.kl_matched(heavy, 3.0, 0.0, tolerance=0.1, standard_errors=2.0)  # 17% off, but inside 2 SE
    assert not bench.kl_matched(tight, 3.0, 0.0, tolerance=0.1, standard_errors=2.0)  # 17% off, 13 SE away
    assert not bench.kl_matched(heavy, 3.0, 0.0, tolerance=0.1, standard_errors=0.0)  # the relative rule alone
    assert bench.kl_matched(tight, 3.3, 0.0, tolerance=0.1, standard_errors=0.0)  # 7% off
    # the target's own noise widens the gap's: 0.52 against 2 x hypot(0.04, 0.3) = 0.61
    assert bench.kl_matched(tight, 3.0, 0.3, tolerance=0.0, standard_errors=2.0)
    assert not bench.kl_matched(tight, 3.0, 0.2, tolerance=0.0, standard_errors=2.0)  # 2 x 0.204 = 0.41


def test_crossed_resampling_covers_an_effect_that_a_seed_carries_under_every_reward_model():
    bench = _bench()
    heads, seeds = 5, 4
    head_of = [h for s in range(seeds) for h in range(heads)]
    seed_of = [s for s in range(seeds) for h in range(heads)]
    value = [-3.0 if s == 1 else 0.0 for s in seed_of]  # seed 1's run drifts under every head; no head effect
    groups = [[i for i, h in enumerate(head_of) if h == g] for g in range(heads)]
    mean = lambda P, Q, L: statistics.fmean(value[i] for i in P)
    nested = bench.cluster_bootstrap(mean, groups, 1, draws=400)
    assert nested == [-0.75, -0.75]  # heads resampled, each keeping its seeds: the seed's effect is never resampled
    crossed = bench.cluster_bootstrap(mean, groups, 1, draws=400, seed_of=seed_of)
    # seed 1 drawn 0 times of 4 with chance (3/4)^4 = 0.32, twice or more with 0.26: the interval spans both
    assert crossed[1] == 0.0 and crossed[0] <= -1.5
    sizes = bench.cluster_draws(lambda P, Q, L: (len(P), len(set(L))), groups, 1, draws=50, seed_of=seed_of)
    assert set(sizes) == {(heads * seeds, heads)}  # every draw is a full cross of drawn heads and drawn seeds


def test_the_spread_table_names_the_policies_that_drift(monkeypatch):
    bench = _bench()
    monkeypatch.setattr(bench, "DRAWS", 50)
    policies = {"head0-seed0": {"gold": [2.0, 2.0], "kl": [2.0, 3.0]}, "head1-seed0": {"gold": [1.0, 3.0], "kl": [2.5, 2.5]},
                "head0-seed1": {"gold": [0.0, 1.0], "kl": [11.0, 13.0]}, "head1-seed1": {"gold": [2.0, 1.0], "kl": [6.0, 6.0]}}
    row = bench.spread_table(policies, [0, 1, 0, 1], seed_of=[0, 0, 1, 1])
    assert row["drifting"] == {"head0-seed1": {"kl": 12.0, "gold": 0.5}}  # past 6 nats; exactly 6 is not
    assert row["kl"] == pytest.approx((2.5 + 2.5 + 12.0 + 6.0) / 4) and row["kl_median"] == pytest.approx(4.25)


def test_variance_parts_and_robust_spreads_by_hand():
    bench = _bench()
    parts = bench.variance_parts([1.0, 3.0, 10.0, 14.0], [0, 0, 1, 1])
    assert parts["between"] == pytest.approx(((2 - 7) ** 2 + (12 - 7) ** 2) / 2)  # group means 2 and 12
    assert parts["within"] == pytest.approx((1 + 4) / 2)
    assert parts["between"] + parts["within"] == pytest.approx(statistics.pvariance([1.0, 3.0, 10.0, 14.0]))
    assert bench.iqr([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2.0)
    assert bench.trimmed_variance([0.0] + [1.0, 2.0, 3.0] * 3 + [100.0]) == pytest.approx(statistics.variance([1.0, 2.0, 3.0] * 3))
    with pytest.raises(Exception, match="A:B"):
        bench.seed_range("3:1")
    with pytest.raises(SystemExit, match="no arm 'varkl'"):  # a typo would silently tune β instead
        bench.main(["uncertainty", "--draws", "200", "--beta", "varkl=0.3", "--world", "no-world", "--no-figure"])


def test_cluster_bootstrap_covers_the_reward_models_spread():
    """Policies in 4 groups whose means differ (a reward-model effect) and no seed or prompt effect:
    resampling policies alone would ignore that 4 groups are all the evidence; the cluster interval of
    the mean is about the groups' standard error wide."""
    bench = _bench()
    group_value = [0.0, 1.0, 2.0, 3.0]
    values = [[group_value[g]] * 3 for g in range(4) for _ in range(10)]
    groups = [list(range(10 * g, 10 * g + 10)) for g in range(4)]
    lo, hi = bench.cluster_bootstrap(lambda P, Q, L: statistics.fmean(bench.policy_means(values, P, Q)), groups, 3, draws=4000)
    se = statistics.pstdev(group_value) / 2  # sd of group means / sqrt(4 groups)
    assert lo < 1.5 < hi and (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.3)


def test_bootstrap_interval_of_a_known_spread():
    """The two-level bootstrap on values with no prompt effect: the interval of the mean across
    policies holds the mean and is about ±1.96 standard errors wide."""
    bench = _bench()
    policies = [[float(i)] * 5 for i in range(40)]  # policy i scores i on every prompt
    lo, hi = bench.bootstrap(lambda P, Q: statistics.fmean(bench.policy_means(policies, P, Q)), 40, 5, draws=4000)
    se = statistics.stdev(range(40)) / 40 ** 0.5
    assert lo < 19.5 < hi
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_verdict_reads_the_planned_side_and_declines_without_an_interval():
    bench = _bench()
    plan = {"statistic": "a.b", "prediction": "negative"}
    entry = lambda lo, hi: {"a": {"b": {"value": (lo + hi) / 2, "ci95": [lo, hi]}}}
    assert bench.verdict(entry(-0.3, -0.1), plan)["verdict"] == "confirmed"
    assert bench.verdict(entry(-0.3, 0.1), plan)["verdict"] == "not confirmed"
    assert bench.verdict(entry(0.1, 0.3), {**plan, "prediction": "positive"})["verdict"] == "confirmed"
    assert bench.verdict(entry(-0.1, 0.3), {**plan, "prediction": "positive"})["verdict"] == "not confirmed"
    undecided = bench.verdict({"a": {"b": {"value": 0.2, "ci95": None}}}, plan)
    assert undecided["verdict"].startswith("not decided") and undecided["ci95"] is None


def test_a_pm_confirmation_decides_the_regularisers_claims_too(tmp_path, monkeypatch):
    bench = _bench()
    entry = lambda value, lo, hi: {"value": value, "ci95": [lo, hi]}
    explored = {"seeds": [0, 1], "betas_run": [1.0, 0.1], "arms": {}, "settings": {"steps": 60},
                "summary": {"kl_gap_change": entry(-0.5, -0.9, -0.1), "kl_optimum_gap_change": entry(-0.6, -1, 0),
                            "cpm_over_kl-unbiased-beta1.0": entry(0.0, -0.1, 0.1),
                            "pm_over_kl-unbiased-beta1.0": entry(-0.6, -0.7, -0.5),
                            "pm_over_kl-unbiased-beta0.1": entry(0.2, 0.1, 0.3)}}
    path = tmp_path / "explored.json"
    path.write_text(json.dumps(explored))
    plan = bench.protocol_from("pm", path, [5], explored)
    assert [c["statistic"] for c in plan["claims"]] == ["cpm_over_kl-unbiased-beta1.0", "pm_over_kl-unbiased-beta1.0"]
    assert {c["prediction"] for c in plan["claims"]} == {"negative"}  # the paper's side, not the exploratory one's
    assert plan["prediction"] == "negative"  # the bias check: the optimum's change was negative
    assert "claims" not in bench.protocol_from("pm", path, [5], {**explored, "summary": {  # a KL-only design
        k: v for k, v in explored["summary"].items() if "over_kl" not in k}})

    def pm(world, result, out, a):  # the confirmatory policies, faked: cPM no better, PM lower, bias not moved
        result["summary"] = {"kl_gap_change": entry(-0.2, -0.6, 0.2), "kl_optimum_gap_change": entry(-0.6, -1, 0),
                             "cpm_over_kl-unbiased-beta1.0": entry(0.05, -0.05, 0.15),
                             "pm_over_kl-unbiased-beta1.0": entry(-0.5, -0.6, -0.4)}

    monkeypatch.setattr(bench, "pm", pm)
    result = bench.main(["pm", "--confirm", str(path), "--seeds", "5:6", "--result", str(tmp_path / "c.json"), "--no-figure"])
    assert result["verdict"]["verdict"] == "not confirmed"
    assert [v["verdict"] for v in result["claim_verdicts"]] == ["not confirmed", "confirmed"]
    assert json.loads((tmp_path / "c.json").read_text())["claim_verdicts"] == result["claim_verdicts"]
    older = json.loads((tmp_path / "c.json").read_text())  # a confirmation written before plans had claims or settings
    del older["protocol"]["claims"], older["claim_verdicts"]
    older["protocol"]["settings"] = None
    (tmp_path / "c.json").write_text(json.dumps(older))
    again = bench.main(["pm", "--confirm", str(path), "--seeds", "5:6", "--result", str(tmp_path / "c.json"), "--no-figure"])
    assert "claim_verdicts" not in again and again["verdict"]["verdict"] == "not confirmed"  # its own plan, resumed
    older["protocol"]["prediction"] = "positive"
    (tmp_path / "c.json").write_text(json.dumps(older))
    with pytest.raises(SystemExit, match="another protocol"):
        bench.main(["pm", "--confirm", str(path), "--seeds", "5:6", "--result", str(tmp_path / "c.json"), "--no-figure"])


def test_fisher_exact_for_collapse_rates_by_hand():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import ppo_critic

    assert ppo_critic.fisher_exact(1, 10, 0, 10) == pytest.approx(1.0)  # one collapse in twenty runs says nothing
    # 0 of 10 against 5 of 10: tables at x = 0 and x = 5 collapses in the first arm, each 252 / 15504
    assert ppo_critic.fisher_exact(0, 10, 5, 10) == pytest.approx(2 * 252 / 15504)
    assert ppo_critic.fisher_exact(3, 10, 3, 10) == pytest.approx(1.0)


def test_the_reward_kl_frontier_by_hand():
    """Two gold values, equally likely under the reference: the tilted policy puts e^λ/(1+e^λ) on
    the better one, at KL log 2 + p log p + (1−p) log(1−p); the frontier inverts that."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    import ppo_critic

    counts = {0.0: 5, 1.0: 5}
    p = math.exp(1.5) / (1 + math.exp(1.5))
    gold, kl = ppo_critic.tilted(counts, 1.5)
    assert gold == pytest.approx(p)
    assert kl == pytest.approx(math.log(2) + p * math.log(p) + (1 - p) * math.log(1 - p))
    assert ppo_critic.frontier_gold(counts, kl) == pytest.approx(p, abs=1e-6)
    assert ppo_critic.frontier_gold(counts, 0.0) == pytest.approx(0.5, abs=1e-6)  # the reference itself
    assert ppo_critic.tilted(counts, 0.0) == pytest.approx((0.5, 0.0))
