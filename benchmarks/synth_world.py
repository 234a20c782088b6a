"""The synth world: a policy that writes synth's film reviews, its transparent gold reward, proxy
reward models, and four PPO experiments with tens of policies per arm on 2 CPU cores.

A PPO step on the world's policy (GPT-2 shapes, 2 layers, 64 wide, one token per word) costs about
0.2 s at batch 32 and 48 new tokens, so an arm of 20 policies trains in minutes. Every policy is
judged by synth's gold reward (`rlhfkit.synth.gold_reward`) on held-out prompts.

    python benchmarks/synth_world.py build          # world policies (unbiased, biased), reward models, ensemble
    python benchmarks/synth_world.py step-cost      # PPO step: world policy vs SmolLM2-135M, same settings
    python benchmarks/synth_world.py overopt        # 1. gold and proxy reward against sqrt(KL)
    python benchmarks/synth_world.py uncertainty    # 2. KL vs variance-weighted KL, 20 policies each, matched KL
    python benchmarks/synth_world.py pm             # 3. KL / PM / cPM from an unbiased and a biased reference
    python benchmarks/synth_world.py cleaning       # 4. policies on noisy / cleaned / gold-label reward models

Every policy's result is saved as it finishes (results/synth_world_<experiment>_cpu.json) and the
script resumes where it stopped. --threads 1 lets two experiments run side by side on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from _run import read_jsonl, rlhfkit, save_json, write_jsonl

RESULTS = Path(__file__).with_name("results")
FIGURES = Path(__file__).resolve().parent.parent / "docs" / "figures"
DRAWS = 2000  # bootstrap resamples per interval (--draws; the tests' miniatures use fewer)
PPO_DEFAULTS = dict(batch_size=32, mini_batch_size=16, ppo_epochs=4, max_new_tokens=48, lr=1e-4, sample_steps=0,
                    save_steps=0, score_clip=6.0, chat_template=False)


# ---------------------------------------------------------------- the world

def build(world: Path, sft_records: int = 20000) -> None:
    """Policies (unbiased and biased reference), pair sets, reward models and the K = 10 ensemble."""
    world.mkdir(parents=True, exist_ok=True)
    for name, share in (("policy", 0.5), ("policy-negative", 0.2)):
        if not (world / name / "config.json").exists():
            rlhfkit("synth", "--kind", "reviews", "--n", sft_records, "--positive-share", share, "--seed", 0,
                    "--out", world / f"reviews-{name}.jsonl")
            rlhfkit("sft", world / f"reviews-{name}.jsonl", "--model", "synth-world", "--out", world / name,
                    "--epochs", 3, "--lr", "3e-3", "--batch-size", 64)
    files = {"noisy": ("--noise", 0.2), "gold-labels": ("--noise", 0.0)}
    for name, (flag, value) in files.items():
        if not (world / f"{name}.jsonl").exists():
            rlhfkit("synth", "--n", 1000, flag, value, "--seed", 0, "--out", world / f"{name}.jsonl")
    if not (world / "test.jsonl").exists():
        rlhfkit("synth", "--n", 500, "--seed", 9, "--out", world / "test.jsonl")
        rlhfkit("synth", "--n", 2000, "--seed", 11, "--out", world / "prompt-source.jsonl")
        rows = read_jsonl(world / "prompt-source.jsonl")
        write_jsonl(world / "train-prompts.jsonl", [{"prompt": r["prompt"]} for r in rows[:1000]])
        write_jsonl(world / "eval-prompts.jsonl", [{"prompt": r["prompt"]} for r in rows[1000:1128]])
    if not (world / "strength.jsonl").exists():  # the default `strength | clean --flip` pipeline
        strength, _ = rlhfkit("strength", world / "noisy.jsonl")
        (world / "strength.jsonl").write_text(strength)
    if not (world / "cleaned.jsonl").exists():
        rlhfkit("clean", world / "strength.jsonl", "--flip", "--out", world / "cleaned.jsonl")
    for name in ("noisy", "cleaned", "gold-labels"):
        if not (world / f"rm-{name}" / "rlhfkit.json").exists():
            rlhfkit("train-rm", world / f"{name}.jsonl", "--model", world / "policy", "--out", world / f"rm-{name}",
                    "--lr", "1e-3", "--epochs", 6, "--batch-size", 32, "--save-steps", 0)
    if not (world / "ensemble" / "rlhfkit.json").exists():
        rlhfkit("ensemble", world / "noisy.jsonl", "--from-rm", world / "rm-noisy", "--heads", 10, "--bootstrap",
                "--epochs", 6, "--out", world / "ensemble")
    for k in range(1, MODEL_MEMBERS + 1):  # the second construction: reward models trained independently
        if not (world / f"rm-noisy-seed{k}" / "rlhfkit.json").exists():
            rlhfkit("train-rm", world / "noisy.jsonl", "--model", world / "policy", "--out", world / f"rm-noisy-seed{k}",
                    "--lr", "1e-3", "--epochs", 6, "--batch-size", 32, "--save-steps", 0, "--seed", k)
    if not (world / "ensemble-models" / "rlhfkit.json").exists():
        members = [a for k in range(1, MODEL_MEMBERS + 1) for a in ("--members", world / f"rm-noisy-seed{k}")]
        rlhfkit("ensemble", *members, "--out", world / "ensemble-models")
    measured = {"command": "python benchmarks/synth_world.py build", "accuracy_on_500_clean_pairs": {}}
    for name in ("rm-noisy", "rm-cleaned", "rm-gold-labels", "ensemble", "ensemble-models"):
        text, _ = rlhfkit("metrics", "accuracy", world / "test.jsonl", "--reward", world / name)
        measured["accuracy_on_500_clean_pairs"][name] = json.loads(text)["overall"]
    _, cleaned = rlhfkit("clean", world / "strength.jsonl", "--flip", "--out", world / "cleaned-again.jsonl")
    measured["clean"] = {k: cleaned.get(k) for k in ("actions", "flip_quality", "noise_rate_estimate")}
    measured["policies"] = {name: policy_shape(world / name, world) for name in ("policy", "policy-negative")}
    save_json(world / "accuracy.json", measured["accuracy_on_500_clean_pairs"])
    save_json(RESULTS / "synth_world_build_cpu.json", measured)
    print(json.dumps(measured))


MODEL_MEMBERS = 5  # independently trained reward models of the second construction


def policy_shape(policy: Path, world: Path, n: int = 256) -> dict:
    """How many of n samples have synth's review shape, the gold values they take and their mean."""
    import re

    from rlhfkit import synth
    from rlhfkit.metrics.sampling import sample_with_logprobs

    word = "(?:(?:{}) )?(?:{})".format("|".join(synth.INTENSIFIERS), "|".join(synth.POSITIVE + synth.NEGATIVE))
    clause = "(?:{}) was {}".format("|".join(synth.ASPECTS), word)
    shape = re.compile(rf"^{clause}(?:(?:, {clause})* and {clause})?\.$", re.IGNORECASE)
    prompts = [r["prompt"] for r in read_jsonl(world / "eval-prompts.jsonl")][: n // 2]
    rows = sample_with_logprobs(str(policy), prompts, n=2, max_new_tokens=PPO_DEFAULTS["max_new_tokens"], seed=1,
                                logprobs=False, chat_template=False)
    gold = [synth.gold_reward(r["response"]) for r in rows]
    return {"samples": len(rows), "in_shape": sum(bool(shape.match(r["response"])) for r in rows),
            "gold_values": sorted(set(gold)), "gold_mean": statistics.fmean(gold)}


# ---------------------------------------------------------------- one policy: train, then judge by gold

def train_policy(run_dir: Path, prompts: list, **settings) -> dict:
    """One in-process PPO run (no interpreter start per policy); returns its training log."""
    from rlhfkit.ppo.trainer import PPOConfig, train_ppo

    cfg = PPOConfig(out=str(run_dir), **{**PPO_DEFAULTS, **settings})
    t0 = time.perf_counter()
    train_ppo(cfg, prompts, progress=False)
    log = read_jsonl(run_dir / "log.jsonl")
    return {"seconds_train": time.perf_counter() - t0, "log": log}


def judge_policy(policy: str, reference: str, prompts: list, samples: int = 2, beta: float = 1.0) -> dict:
    """Per held-out prompt: mean gold reward, KL to the reference and PM divergence (gold reward, β)
    over ``samples`` responses; the policy-level numbers are means of these per-prompt values."""
    import torch

    from rlhfkit.metrics.core import pm_divergence
    from rlhfkit.metrics.sampling import sample_with_logprobs
    from rlhfkit.synth import gold_reward

    rows = sample_with_logprobs(policy, prompts, n=samples, ref=reference, batch_size=64,
                                max_new_tokens=PPO_DEFAULTS["max_new_tokens"], seed=1234, chat_template=False)
    by_prompt: list[list[dict]] = [[] for _ in prompts]
    for r in rows:
        by_prompt[r["prompt_index"]].append(r)
    gold = [[gold_reward(r["response"]) for r in rs] for rs in by_prompt]
    logp = torch.tensor([[r["logp"] for r in rs] for rs in by_prompt])
    pm = pm_divergence(logp, torch.tensor(gold), beta).tolist()
    return {"gold": [statistics.fmean(g) for g in gold],
            "kl": [statistics.fmean(r["logp"] - r["ref_logp"] for r in rs) for rs in by_prompt],
            "pm_divergence": pm,
            "length": statistics.fmean(r["length"] for r in rows),
            "example": by_prompt[0][0]["response"]}


def run_arm(result: dict, path: Path, runs_dir: Path, arm: str, names: list[str], settings_of, prompts, eval_prompts,
            reference_of, beta_for_pm=1.0) -> None:
    """Train and judge each named policy of an arm that the result does not hold yet; save after each."""
    policies = result.setdefault("arms", {}).setdefault(arm, {})
    for name in names:
        if name in policies:
            continue
        run_dir = runs_dir / arm / name
        settings = settings_of(name)
        trained = train_policy(run_dir, prompts, **settings)
        judged = judge_policy(str(run_dir), reference_of(name), eval_prompts, beta=beta_for_pm)
        tail = trained["log"][-5:]
        policies[name] = {**judged, "seconds_train": trained["seconds_train"],
                          "train_reward_last5": statistics.fmean(e["reward_mean"] for e in tail),
                          "beta": settings.get("beta")}
        shutil.rmtree(run_dir, ignore_errors=True)  # a policy is 0.5 MB, but hundreds add up; the numbers are kept
        save_json(path, result)
        print(f"{arm}/{name}: gold {statistics.fmean(judged['gold']):+.3f}  kl {statistics.fmean(judged['kl']):.3f}  "
              f"pm {statistics.fmean(judged['pm_divergence']):.3f}", flush=True)


# ---------------------------------------------------------------- statistics over policies and prompts

def cluster_draws(statistic, groups: list[list[int]], n_prompts: int, draws: int | None = None, seed: int = 0,
                  seed_of: list[int] | None = None) -> list[float]:
    """statistic(policy indices, prompt indices, group labels) over ``draws`` resamples, in draw order.
    Policies come in groups that share a reward model: whole groups are resampled (each drawn copy its
    own label, its policies kept as they are), and prompts, so the spread covers the reward models'
    training, not only the seeds. With one group, each policy is its own group. With ``seed_of`` the
    policies cross reward models with seeds (a seed sets a run's prompts and samples under every reward
    model, so its policies share a trajectory): the seeds are resampled too, independently of the groups."""
    if len(groups) < 2 and not seed_of:
        groups = [[i] for g in groups for i in g]
    seeds = sorted(set(seed_of)) if seed_of else []
    rng = random.Random(seed)
    values = []
    for _ in range(draws or DRAWS):
        drawn = [groups[rng.randrange(len(groups))] for _ in groups]
        if seeds:
            picked = Counter(seeds[rng.randrange(len(seeds))] for _ in seeds)
            drawn = [[i for i in g for _ in range(picked[seed_of[i]])] for g in drawn]
        policies = [i for g in drawn for i in g]
        labels = [k for k, g in enumerate(drawn) for _ in g]
        values.append(statistic(policies, [rng.randrange(n_prompts) for _ in range(n_prompts)], labels))
    return values


def cluster_bootstrap(statistic, groups: list[list[int]], n_prompts: int, draws: int | None = None, seed: int = 0,
                      seed_of: list[int] | None = None) -> list[float]:
    """95% percentile interval of ``cluster_draws``."""
    return interval(cluster_draws(statistic, groups, n_prompts, draws, seed, seed_of))


def bootstrap_draws(statistic, n_policies: int, n_prompts: int, draws: int | None = None, seed: int = 0) -> list[float]:
    """statistic(policy indices, prompt indices) over resamples of policies (each its own group) and prompts."""
    return cluster_draws(lambda P, Q, L: statistic(P, Q), [[i] for i in range(n_policies)], n_prompts, draws, seed)


def interval(values: list[float]) -> list[float]:
    v = sorted(values)
    return [v[int(0.025 * len(v))], v[int(0.975 * len(v)) - 1]]


def bootstrap(statistic, n_policies: int, n_prompts: int, draws: int | None = None, seed: int = 0) -> list[float]:
    """95% percentile interval of statistic(policy indices, prompt indices), both resampled."""
    return interval(bootstrap_draws(statistic, n_policies, n_prompts, draws, seed))


def variance_parts(means: list[float], group_of: list[int]) -> dict:
    """Population variance of policy means split into between-group (variance of the group means,
    weighted by size) and within-group (size-weighted mean of the groups' own variances); they sum to
    the population form of the variance. The between part holds the seeds' noise too, divided by the
    seeds per group: a change in the within part moves it a little."""
    groups: dict[int, list[float]] = {}
    for m, g in zip(means, group_of):
        groups.setdefault(g, []).append(m)
    grand = statistics.fmean(means)
    between = sum(len(v) * (statistics.fmean(v) - grand) ** 2 for v in groups.values()) / len(means)
    within = sum(len(v) * statistics.pvariance(v) for v in groups.values()) / len(means)
    return {"total": statistics.pvariance(means), "between": between, "within": within}


def iqr(values: list[float]) -> float:
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[2] - q[0]


def trimmed_variance(values: list[float], share: float = 0.1) -> float:
    """Sample variance of the values left after dropping ``share`` of them at each end."""
    v = sorted(values)
    cut = int(share * len(v))
    kept = v[cut:len(v) - cut] if len(v) - 2 * cut >= 2 else v
    return statistics.variance(kept) if len(kept) > 1 else 0.0


def policy_means(values, policies, prompts) -> list[float]:
    """Each listed policy's mean over the listed prompts (``values``: policies x prompts, lists or a tensor)."""
    if not isinstance(values, list):
        return values[list(policies)][:, list(prompts)].mean(1).tolist()
    return [statistics.fmean(values[i][j] for j in prompts) for i in policies]


def as_table(rows: list[list[float]]):
    """Per-policy, per-prompt values as a float64 tensor: the bootstrap's thousands of draws index it fast."""
    import torch

    return torch.tensor(rows, dtype=torch.float64)


def arm_table(policies: dict, key: str = "gold") -> tuple[list[list[float]], dict]:
    """An arm's per-policy, per-prompt values of ``key``, and its mean and across-policy variance with intervals."""
    values = [p[key] for p in policies.values()]
    n, m = len(values), len(values[0])
    mean = lambda P, Q: statistics.fmean(policy_means(values, P, Q))
    var = lambda P, Q: statistics.variance(policy_means(values, P, Q)) if len(set(P)) > 1 else 0.0
    every = range(n), range(m)
    return values, {"policies": n, "mean": mean(*every), "mean_ci95": bootstrap(mean, n, m),
                    "variance_across_policies": var(*every), "variance_ci95": bootstrap(var, n, m)}


def paired_relative(a: list[list[float]], b: list[list[float]]) -> dict:
    """mean(a) / mean(b) − 1, policies paired by index and prompts shared, both resampled: an effect
    comparable across metric scales (the paper's cPM: 0.68 / 1.16 − 1 = −41%)."""
    n, m = min(len(a), len(b)), len(a[0])
    rel = lambda P, Q: statistics.fmean(policy_means(a, P, Q)) / statistics.fmean(policy_means(b, P, Q)) - 1
    return {"value": rel(range(n), range(m)), "ci95": bootstrap(rel, n, m)}


def kl_optimum_gold(reference: str, prompts: list, beta: float, samples: int = 8) -> dict:
    """The gold reward of KL-RLHF's optimum π ∝ π_ref·exp(r/β), estimated from the reference's own
    samples by self-normalised importance weights exp(r/β); with its effective sample size, and how
    many samples per prompt scored each gold value (for ``optimum_draws``; gold is a small integer,
    so counts keep 64 samples × 128 prompts small on disk).

    The weights are normalised over all prompts' samples, not per prompt: the world's prompts ask for
    a review of a title and carry no sentiment, so the reference's gold distribution is the same for
    each, and the pooled estimate is far less biased at small β than per-prompt self-normalisation
    over a few samples each (at β 0.5 with 64 samples per prompt the per-prompt version put the
    references' gap at 1.74, near the references' own, against the pooled 0.94: an ad-hoc
    reweighting of these samples during issue 35, not a command of this script)."""
    from rlhfkit.metrics.sampling import sample_with_logprobs
    from rlhfkit.synth import gold_reward

    rows = sample_with_logprobs(reference, prompts, n=samples, batch_size=128, logprobs=False, seed=99,
                                max_new_tokens=PPO_DEFAULTS["max_new_tokens"], chat_template=False)
    by_prompt: list[Counter] = [Counter() for _ in prompts]
    for r in rows:
        by_prompt[r["prompt_index"]][gold_reward(r["response"])] += 1
    pooled = sum(by_prompt, Counter())
    optimum, ess = tilted_mean(pooled, beta)
    return {"samples": sum(pooled.values()), "gold_reference": tilted_mean(pooled, math.inf)[0],
            "gold_kl_optimum": optimum, "effective_samples": ess,
            "gold_counts_by_prompt": [sorted(c.items()) for c in by_prompt]}


def tilted_mean(counts: Counter, beta: float) -> tuple[float, float]:
    """The mean of gold under weights exp(gold/β) over samples given as {gold: count}, and the
    weights' effective sample size (β = inf: the plain mean, every sample counts)."""
    top = max(counts)
    weight = {g: math.exp((g - top) / beta) for g in counts}
    total = sum(weight[g] * c for g, c in counts.items())
    mean = sum(weight[g] * c * g for g, c in counts.items()) / total
    return mean, total ** 2 / sum(weight[g] ** 2 * c for g, c in counts.items())


def counts_by_prompt(theory: dict) -> list[Counter]:
    """The reference's samples per prompt as {gold: count} (older results stored the raw scores)."""
    if "gold_counts_by_prompt" in theory:
        return [Counter({g: c for g, c in pairs}) for pairs in theory["gold_counts_by_prompt"]]
    return [Counter(scores) for scores in theory["gold_by_prompt"]]


def optimum_draws(theory: dict, beta: float, draws: int | None = None, seed: int = 1) -> list[float]:
    """The optimum's gold reward re-estimated on resamples of the reference's prompts (each prompt
    with its samples): the reweighting's own uncertainty. The same seed draws the same prompts for
    both references and every β (their gaps and changes are then paired by prompt)."""
    by_prompt = counts_by_prompt(theory)
    rng = random.Random(seed)
    out = []
    for _ in range(draws or DRAWS):
        drawn = Counter()
        for _ in by_prompt:
            drawn.update(by_prompt[rng.randrange(len(by_prompt))])
        out.append(tilted_mean(drawn, beta)[0])
    return out


def policy_kls(policies: dict) -> list[float]:
    return [statistics.fmean(p["kl"]) for p in policies.values()]


def mean_kl(policies: dict) -> float:
    return statistics.fmean(policy_kls(policies))


def standard_error(values: list[float]) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def kl_matched(kls: list[float], target: float, target_se: float, tolerance: float, standard_errors: float) -> bool:
    """An arm's mean KL matches ``target`` when within ``tolerance`` of it (relative) or within
    ``standard_errors`` standard errors of the gap (the arm's and the target's): per-policy KL is
    heavy-tailed, and a gap inside the noise only sends more rounds after the noise."""
    gap = abs(statistics.fmean(kls) - target)
    return gap <= max(tolerance * target, standard_errors * math.hypot(standard_error(kls), target_se))


# ---------------------------------------------------------------- β for a target KL

def beta_within_bounds(log_beta: float) -> float:
    """exp(log β) kept within [1e-4, 100] (clamped in log space: a nearly flat KL line would overflow),
    to 5 significant digits (the arm's name)."""
    return float(f"{math.exp(min(math.log(100.0), max(math.log(1e-4), log_beta))):.5g}")


def tune_beta(result: dict, path: Path, runs_dir: Path, key: str, settings_of, prompts, eval_prompts, reference: str,
              target_kl: float, betas=(0.02, 0.08, 0.32), pilots: int = 3) -> float:
    """β at which the arm's held-out KL to the reference reaches ``target_kl``: pilot policies at a few
    β, then log-linear interpolation of log KL against log β (KL falls as β grows)."""
    pilot = result.setdefault("beta_pilots", {}).setdefault(key, {})
    for beta in betas:
        if str(beta) in pilot:
            continue
        pol = {}
        for i in range(pilots):
            run_dir = runs_dir / "pilot" / f"{key}-{beta}-{i}"
            train_policy(run_dir, prompts, **{**settings_of(i), "beta": beta, "seed": 1000 + i})
            pol[str(i)] = judge_policy(str(run_dir), reference, eval_prompts)
            shutil.rmtree(run_dir, ignore_errors=True)
        pilot[str(beta)] = mean_kl(pol)
        save_json(path, result)
        print(f"pilot {key} beta {beta}: KL {pilot[str(beta)]:.3f}", flush=True)
    points = sorted((math.log(float(b)), math.log(max(kl, 1e-3))) for b, kl in pilot.items())
    goal = math.log(target_kl)
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if min(y0, y1) <= goal <= max(y0, y1) and y0 != y1:
            return float(f"{math.exp(x0 + (goal - y0) * (x1 - x0) / (y1 - y0)):.5g}")
    (x0, y0), (x1, y1) = (points[0], points[1]) if goal > points[0][1] else (points[-2], points[-1])
    slope = (y1 - y0) / (x1 - x0) if x1 != x0 and y1 != y0 else -1.0
    return beta_within_bounds(x0 + (goal - y0) / slope)


def matched_arm(result: dict, path: Path, runs_dir: Path, method: str, names: list[str], settings_of, prompts,
                eval_prompts, reference_of, target_kl: float, tolerance: float = 0.1, rounds: int = 4,
                target_se: float = 0.0, standard_errors: float = 0.0) -> str:
    """Run ``method``'s whole arm at its tuned β; while the arm's mean held-out KL misses ``target_kl``
    (``kl_matched``: by more than ``tolerance`` relative and ``standard_errors`` standard errors), move β
    along the log KL - log β line through the arm's own runs (the pilots' slope while there is only
    one) and run the arm again. Every arm run is kept (they are
    points of the method's reward-KL frontier); returns the key of the arm that matched, or the closest."""
    betas, arms = result["betas"], result.setdefault("arms", {})
    pilots = sorted((math.log(float(b)), math.log(max(k, 1e-3))) for b, k in result["beta_pilots"][method].items())
    slope = (pilots[-1][1] - pilots[0][1]) / (pilots[-1][0] - pilots[0][0]) if len(pilots) > 1 else -1.0
    slope = slope if slope < -0.05 else -1.0  # KL falls as β grows; a flat or rising pilot line is noise
    for _ in range(rounds):
        key = f"{method}@{betas[method]}"
        run_arm(result, path, runs_dir, key, names, lambda name: {**settings_of(name), "beta": betas[method]},
                prompts, eval_prompts, reference_of)
        done = [(math.log(float(k.split("@")[1])), math.log(max(mean_kl(only(a, names)), 1e-3))) for k, a in arms.items()
                if k.startswith(method + "@") and all(n in a for n in names)]  # this run's policies of each arm
        if kl_matched(policy_kls(only(arms[key], names)), target_kl, target_se, tolerance, standard_errors):
            return key
        if len(done) >= 2:
            (x0, y0), (x1, y1) = sorted(done, key=lambda d: abs(d[1] - math.log(target_kl)))[:2]  # the two nearest the target
            slope = (y1 - y0) / (x1 - x0) if x1 != x0 and (y1 - y0) / (x1 - x0) < 0 else slope
        x, y = math.log(betas[method]), math.log(max(mean_kl(only(arms[key], names)), 1e-3))
        betas[method] = beta_within_bounds(x + (math.log(target_kl) - y) / slope)
        save_json(path, result)
    keys = [k for k in arms if k.startswith(method + "@") and all(n in arms[k] for n in names)]
    return min(keys, key=lambda k: abs(mean_kl(only(arms[k], names)) / target_kl - 1))


# ---------------------------------------------------------------- experiments

def world_paths(world: Path):
    prompts = [r["prompt"] for r in read_jsonl(world / "train-prompts.jsonl")]
    eval_prompts = [r["prompt"] for r in read_jsonl(world / "eval-prompts.jsonl")]
    return prompts, eval_prompts


def step_cost(world: Path, steps: int = 3) -> dict:
    """Seconds per PPO step (batch 32, 48 new tokens) for the world's policy and SmolLM2-135M, in one run."""
    prompts, _ = world_paths(world)
    runs = world / "runs" / "step-cost"
    out = {}
    for name, policy in (("world", str(world / "policy")), ("smollm2-135m", "smollm2-135m")):
        trained = train_policy(runs / name, prompts, policy=policy, reward="rlhfkit.synth:gold", steps=steps)
        per_step = [e["seconds"] for e in trained["log"][1:]]  # the first step also warms caches up
        out[name] = {"seconds_per_step": statistics.fmean(per_step), "steps_timed": len(per_step)}
        shutil.rmtree(runs / name, ignore_errors=True)
    out["ratio"] = out["world"]["seconds_per_step"] / out["smollm2-135m"]["seconds_per_step"]
    out["settings"] = {k: PPO_DEFAULTS[k] for k in ("batch_size", "mini_batch_size", "ppo_epochs", "max_new_tokens")}
    return out


def proxy_model(world: Path, pairs: int | None) -> Path:
    """The proxy reward model: the world's (1,000 noisy pairs), or one trained on the first ``pairs``
    of them (Gao et al.: a proxy from less data peaks earlier)."""
    if not pairs:
        return world / "rm-noisy"
    out = world / f"rm-noisy-{pairs}"
    if not (out / "rlhfkit.json").exists():
        rows = read_jsonl(world / "noisy.jsonl")[:pairs]
        write_jsonl(world / f"noisy-{pairs}.jsonl", rows)
        rlhfkit("train-rm", world / f"noisy-{pairs}.jsonl", "--model", world / "policy", "--out", out,
                "--lr", "1e-3", "--epochs", 6, "--batch-size", 32, "--save-steps", 0)
    return out


def overopt(world: Path, result: dict, path: Path, seeds: list[int], steps: int, proxy_pairs: int | None = None) -> None:
    """Gao et al.'s picture: PPO against the noisy proxy with no KL penalty; proxy and gold reward of
    every training batch against sqrt(KL) of that batch."""
    from rlhfkit.synth import gold_reward

    prompts, _ = world_paths(world)
    proxy = proxy_model(world, proxy_pairs)
    result["seeds"], result["proxy"], result["proxy_pairs"], result["steps"] = seeds, proxy.name, proxy_pairs or 1000, steps
    runs = result.setdefault("runs", {})
    for seed in seeds:
        if str(seed) in runs:
            continue
        run_dir = world / "runs" / "overopt" / f"seed{seed}"
        trained = train_policy(run_dir, prompts, policy=str(world / "policy"), reward=str(proxy),
                               normalize_reward=True, beta=0.0, steps=steps, sample_steps=1, seed=seed)
        samples = read_jsonl(run_dir / "samples.jsonl")
        gold: dict[int, list[float]] = {}
        for s in samples:
            gold.setdefault(s["step"], []).append(gold_reward(s["response"]))
        runs[str(seed)] = [{"step": e["step"], "kl": e["kl"], "proxy": e["reward_mean"],
                            "gold": statistics.fmean(gold[e["step"]])} for e in trained["log"]]
        shutil.rmtree(run_dir, ignore_errors=True)
        save_json(path, result)
        print(f"overopt seed {seed}: final proxy {runs[str(seed)][-1]['proxy']:.2f} gold {runs[str(seed)][-1]['gold']:.2f}", flush=True)


def overopt_summary(result: dict, seeds: list[int] | None = None, bins: int = 8, peak_sqrt_kl: float | None = None) -> dict:
    """Gold and proxy reward by sqrt(KL) bin, averaged over the seeds, with intervals over seeds; and
    the fall of gold from the peak bin (the best bin, or the bin holding ``peak_sqrt_kl`` when a
    confirmatory run fixed it) to the last bin, per seed, with its interval over seeds."""
    runs = [result["runs"][str(s)] for s in seeds] if seeds else list(result["runs"].values())
    rows = [r for run in runs for r in run]
    root = lambda r: math.sqrt(max(r["kl"], 0))
    top = max(root(r) for r in rows)
    edges = [top * i / bins for i in range(bins + 1)]
    table, per_bin = [], []
    for lo, hi in zip(edges, edges[1:]):
        per_seed = {}
        for i, run in enumerate(runs):
            inside = [r for r in run if lo <= root(r) < hi or (hi == top and root(r) == top)]
            if inside:
                per_seed[i] = (statistics.fmean(r["gold"] for r in inside), statistics.fmean(r["proxy"] for r in inside))
        if len(per_seed) >= 2:
            gold = [g for g, _ in per_seed.values()]
            ci = bootstrap(lambda P, Q: statistics.fmean(gold[i] for i in P), len(gold), 1)
            table.append({"sqrt_kl": (lo + hi) / 2, "seeds": len(gold), "gold": statistics.fmean(gold), "gold_ci95": ci,
                          "proxy": statistics.fmean(p for _, p in per_seed.values())})
            per_bin.append(per_seed)
    if peak_sqrt_kl is None:
        peak = max(range(len(table)), key=lambda i: table[i]["gold"])
    else:
        peak = min(range(len(table)), key=lambda i: abs(table[i]["sqrt_kl"] - peak_sqrt_kl))
    both = [i for i in per_bin[-1] if i in per_bin[peak]]
    falls = [per_bin[-1][i][0] - per_bin[peak][i][0] for i in both]
    fall = {"value": statistics.fmean(falls) if falls else float("nan"), "seeds": len(falls),
            "ci95": bootstrap(lambda P, Q: statistics.fmean(falls[i] for i in P), len(falls), 1) if len(falls) >= 2 else None}
    return {"bins": table, "gold_peak_sqrt_kl": table[peak]["sqrt_kl"], "gold_at_peak": table[peak]["gold"],
            "gold_at_end": table[-1]["gold"], "proxy_at_end": table[-1]["proxy"], "gold_fall": fall,
            "gold_falls_after_peak": bool(fall["ci95"] and fall["ci95"][1] < 0)}


DRIFT_KL = 6.0  # nats per response: a policy this far from the reference has left the arm's bulk (2-3 nats)


def spread_table(policies: dict, group_of: list[int], key: str = "gold", seed_of: list[int] | None = None) -> dict:
    """An arm's mean and spread of gold reward across policies: the variance (sample form), its split
    into between- and within-reward-model parts, the IQR and the 10%-trimmed variance, each with a
    95% interval from the cluster bootstrap (reward models, with ``seed_of`` crossed with seeds, then
    prompts); KL mean and median; and the policies past ``DRIFT_KL``, which carry most of the variance."""
    values = as_table([p[key] for p in policies.values()])
    n, m = values.shape
    groups = [[i for i in range(n) if group_of[i] == g] for g in sorted(set(group_of))]
    means = lambda P, Q: policy_means(values, P, Q)
    part = lambda name: (lambda P, Q, L: variance_parts(means(P, Q), L)[name])
    stats = {"mean": lambda P, Q, L: statistics.fmean(means(P, Q)),
             "variance_across_policies": lambda P, Q, L: statistics.variance(means(P, Q)),
             "variance_between_reward_models": part("between"), "variance_within_reward_models": part("within"),
             "iqr": lambda P, Q, L: iqr(means(P, Q)), "trimmed_variance": lambda P, Q, L: trimmed_variance(means(P, Q))}
    every = list(range(n)), list(range(m)), group_of
    out = {"policies": n, "reward_models": len(groups)}
    for name, f in stats.items():
        out[name] = f(*every)
        out[name + "_ci95"] = cluster_bootstrap(f, groups, m, seed_of=seed_of)
    kls = policy_kls(policies)
    drifting = {name: {"kl": kl, "gold": statistics.fmean(p[key])}
                for (name, p), kl in zip(policies.items(), kls) if kl > DRIFT_KL}
    return out | {"kl": statistics.fmean(kls), "kl_median": statistics.median(kls), "drifting": drifting}


def paired_difference(a: dict, b: dict, group_of: list[int], statistic, key: str = "gold",
                      seed_of: list[int] | None = None) -> dict:
    """statistic(arm a's policy means of ``key``, labels) − the same of arm b, policies paired by name
    (same reward model and seed), with the cluster bootstrap over reward models, seeds and prompts
    (``group_of``: each policy's reward model; all different when there is none to share)."""
    names = [k for k in a if k in b]
    va, vb = as_table([a[k][key] for k in names]), as_table([b[k][key] for k in names])
    groups = [[i for i in range(len(names)) if group_of[i] == g] for g in sorted(set(group_of))]
    diff = lambda P, Q, L: statistic(policy_means(va, P, Q), L) - statistic(policy_means(vb, P, Q), L)
    every = list(range(len(names))), list(range(len(va[0]))), group_of
    return {"value": diff(*every), "ci95": cluster_bootstrap(diff, groups, len(va[0]), seed_of=seed_of)}


def ensemble_size(directory: Path) -> int:
    return int(json.loads((directory / "rlhfkit.json").read_text())["heads"])


def uncertainty(world: Path, result: dict, path: Path, a) -> None:
    """2. One policy per (reward model, seed): vanilla KL against variance-weighted KL (σ: the
    ensemble's std). Reward models: ten linear heads on one backbone (``--construction heads``) or
    independently trained reward models (``models``). β per method: tuned to a held-out KL and matched
    (exploratory), or fixed with --beta (several per method: the variance–KL frontier)."""
    prompts, eval_prompts = world_paths(world)
    policy = str(world / "policy")
    reward = world / ("ensemble" if a.construction == "heads" else "ensemble-models")
    runs_dir = world / "runs" / f"uncertainty-{a.construction}"
    heads = ensemble_size(reward)
    names = [f"head{h}-seed{s}" for s in a.seed_list for h in range(heads)][: a.policies or None]
    parse = lambda name: (int(name.split("-")[0][4:]), int(name.split("seed")[1]))
    group_of, seed_of = [parse(n)[0] for n in names], [parse(n)[1] for n in names]  # crossed: every model, every seed
    base = dict(policy=policy, reward=str(reward), steps=a.steps)
    methods = {"var-kl": dict(regularizer="var-kl", variance_power=1.0), "kl": dict(regularizer="kl")}
    result["construction"], result["seeds"] = a.construction, a.seed_list
    betas = result.setdefault("betas", {})
    arms = result.setdefault("arms", {})
    for method in methods:  # results of the version that kept one arm per method under the method's name
        if method in arms and method in betas:
            arms[f"{method}@{betas[method]}"] = arms.pop(method)
    used, target, target_se = {}, a.target_kl, 0.0
    for method, flags in methods.items():
        settings_of = lambda name, flags=flags: {**base, **flags, "reward_head": parse(name)[0], "seed": parse(name)[1]}
        if method in a.fixed_betas:  # the frontier's points, or a confirmatory run's fixed β
            for beta in a.fixed_betas[method]:
                run_arm(result, path, runs_dir, f"{method}@{beta}", names,
                        lambda name, beta=beta, f=settings_of: {**f(name), "beta": beta}, prompts, eval_prompts,
                        lambda name: policy)
            used[method] = f"{method}@{a.fixed_betas[method][0]}"
            continue
        pilot_settings = lambda i, flags=flags: {**base, **flags, "reward_head": i % heads}
        if method not in betas:
            betas[method] = tune_beta(result, path, runs_dir, method, pilot_settings, prompts, eval_prompts, policy,
                                      a.target_kl, pilots=a.pilots)
            save_json(path, result)
        used[method] = matched_arm(result, path, runs_dir, method, names, settings_of, prompts, eval_prompts,
                                   lambda name: policy, target, a.kl_tolerance, a.kl_rounds, target_se,
                                   a.kl_standard_errors)
        matched = only(arms[used[method]], names)  # the second method is matched to the first's achieved KL
        target, target_se = mean_kl(matched), standard_error(policy_kls(matched))
    result["matched_arms"] = used
    summary: dict = {}
    for key, arm in arms.items():
        if all(n in arm for n in names):
            summary[key] = spread_table(only(arm, names), group_of, seed_of=seed_of) | {"beta": float(key.split("@")[1])}
    for m in methods:
        summary[m] = summary[used[m]]
    a_arm, b_arm = only(arms[used["var-kl"]], names), only(arms[used["kl"]], names)
    sample_var = lambda means, L: statistics.variance(means)
    part = lambda name: (lambda means, L: variance_parts(means, L)[name])
    differ = lambda statistic: paired_difference(a_arm, b_arm, group_of, statistic, seed_of=seed_of)
    summary["var_kl_minus_kl"] = {
        "mean": differ(lambda means, L: statistics.fmean(means)),
        "variance": differ(sample_var),
        "variance_between_reward_models": differ(part("between")),
        "variance_within_reward_models": differ(part("within")),
        "iqr": differ(lambda means, L: iqr(means)),
        "trimmed_variance": differ(lambda means, L: trimmed_variance(means))}
    summary["frontier"] = {k: {c: summary[k][c] for c in ("kl", "kl_median", "mean", "variance_across_policies",
                                                          "variance_across_policies_ci95", "iqr", "trimmed_variance", "policies")}
                           for k in arms if k in summary}
    summary["kl_ratio"] = summary["var-kl"]["kl"] / summary["kl"]["kl"]
    result["summary"] = summary


def only(arm: dict, names: list[str]) -> dict:
    """The arm's policies of this run's seeds, in the run's order (an arm may hold other seeds' policies)."""
    return {n: arm[n] for n in names if n in arm}


def pm(world: Path, result: dict, path: Path, a) -> None:
    """3. KL-RLHF, PM and cPM (α = 0.3) against the gold reward, from the unbiased and the negatively
    biased reference, at each β; PM divergence (gold reward, that β) and the bias each inherits.

    Two explanations of KL-RLHF's gold gap between the references: it inherits the optimum's bias
    (the gap follows the closed form, which changes with β), or it keeps the references' own gap
    (which does not). The policies' gap and the optimum's are compared at every β, and their
    change from the largest to the smallest β, with intervals that resample the reweighting too."""
    prompts, eval_prompts = world_paths(world)
    refs = {"unbiased": str(world / "policy"), "biased": str(world / "policy-negative")}
    names = [f"seed{s}" for s in a.seed_list]
    result["seeds"], result["betas_run"] = a.seed_list, a.betas
    for beta in a.betas:
        for ref_name, ref in refs.items():
            for reg in a.regularizers:
                run_arm(result, path, world / "runs" / "pm", f"{reg}-{ref_name}-beta{beta}", names,
                        lambda name, reg=reg, ref=ref, beta=beta: dict(
                            policy=ref, reward="rlhfkit.synth:gold", regularizer=reg, alpha=0.3, beta=beta,
                            steps=a.steps, seed=int(name[4:])),
                        prompts, eval_prompts, lambda name, ref=ref: ref, beta_for_pm=beta)
    arms = {k: only(v, names) for k, v in result["arms"].items() if all(n in v for n in names)}
    summary: dict = {arm: {"gold": arm_table(pol)[1], "pm_divergence": arm_table(pol, "pm_divergence")[1],
                           "kl": mean_kl(pol)} for arm, pol in arms.items()}
    column = lambda arm, key: [p[key] for p in arms[arm].values()]
    others = [reg for reg in ("pm", "cpm") if reg in a.regularizers]
    alone = list(range(len(names)))  # no reward model is shared: each policy is its own group
    mean = lambda means, L: statistics.fmean(means)
    for beta in a.betas:
        for ref_name in refs:
            for reg in others:
                summary[f"{reg}_minus_kl-{ref_name}-beta{beta}"] = paired_difference(
                    arms[f"{reg}-{ref_name}-beta{beta}"], arms[f"kl-{ref_name}-beta{beta}"], alone, mean, "pm_divergence")
                summary[f"{reg}_over_kl-{ref_name}-beta{beta}"] = paired_relative(
                    column(f"{reg}-{ref_name}-beta{beta}", "pm_divergence"), column(f"kl-{ref_name}-beta{beta}", "pm_divergence"))
        for reg in a.regularizers:  # the reference's bias carried into the policy: gold(unbiased) − gold(biased)
            summary[f"bias_gap-{reg}-beta{beta}"] = paired_difference(
                arms[f"{reg}-unbiased-beta{beta}"], arms[f"{reg}-biased-beta{beta}"], alone, mean)
    theory = result.setdefault("kl_optimum", {})
    for ref_name, ref in refs.items():
        sampled = None  # the same reference samples serve every β (seeded): the optimum's change across β is paired
        for beta in a.betas:
            have = theory.get(f"{ref_name}-beta{beta}", {})
            if have.get("samples") != a.optimum_samples * len(eval_prompts):
                sampled = sampled or kl_optimum_gold(ref, eval_prompts, beta, a.optimum_samples)
                pooled = sum(counts_by_prompt(sampled), Counter())
                optimum, ess = tilted_mean(pooled, beta)
                theory[f"{ref_name}-beta{beta}"] = {**sampled, "gold_kl_optimum": optimum, "effective_samples": ess}
                save_json(path, result)
    hidden = ("gold_by_prompt", "gold_counts_by_prompt")
    summary["kl_optimum"] = {k: {f: v for f, v in t.items() if f not in hidden} for k, t in theory.items()}
    summary.update(bias_versus_optimum(arms, theory, a.betas))
    result["summary"] = summary


def bias_versus_optimum(arms: dict, theory: dict, betas: list[float], draws: int | None = None) -> dict:
    """Per β: the KL policies' gold gap (unbiased − biased reference), the optimum's, and their
    difference; and from the largest to the smallest β the change of each. Policies and prompts are
    resampled for the policies' gap, the reference's prompts (with their samples) for the optimum's."""
    gold = lambda ref, beta: as_table([p["gold"] for p in arms[f"kl-{ref}-beta{beta}"].values()])
    n, m = len(gold("unbiased", betas[0])), len(gold("unbiased", betas[0])[0])
    mean = lambda v, P, Q: statistics.fmean(policy_means(v, P, Q))
    policy_gap = {b: (lambda P, Q, b=b: mean(gold("unbiased", b), P, Q) - mean(gold("biased", b), P, Q)) for b in betas}
    every = range(n), range(m)
    policy_draws = {b: bootstrap_draws(policy_gap[b], n, m, draws) for b in betas}  # same seed: paired across β
    opt_value = {b: theory[f"unbiased-beta{b}"]["gold_kl_optimum"] - theory[f"biased-beta{b}"]["gold_kl_optimum"]
                 for b in betas}
    opt_draws = {b: [u - v for u, v in zip(optimum_draws(theory[f"unbiased-beta{b}"], b, draws, seed=1),
                                           optimum_draws(theory[f"biased-beta{b}"], b, draws, seed=1))] for b in betas}
    out: dict = {}
    for b in betas:
        out[f"kl_gap-beta{b}"] = {"value": policy_gap[b](*every), "ci95": interval(policy_draws[b])}
        out[f"kl_optimum_gap-beta{b}"] = {"value": opt_value[b], "ci95": interval(opt_draws[b])}
        out[f"kl_gap_minus_optimum-beta{b}"] = {"value": policy_gap[b](*every) - opt_value[b],
                                                "ci95": interval([x - y for x, y in zip(policy_draws[b], opt_draws[b])])}
    small, large = min(betas), max(betas)
    if small != large:
        out["kl_gap_change"] = {"value": policy_gap[small](*every) - policy_gap[large](*every), "betas": [small, large],
                                "ci95": interval([x - y for x, y in zip(policy_draws[small], policy_draws[large])])}
        out["kl_optimum_gap_change"] = {"value": opt_value[small] - opt_value[large], "betas": [small, large],
                                        "ci95": interval([x - y for x, y in zip(opt_draws[small], opt_draws[large])])}
    return out


def cleaning_reward_models(world: Path, replicate: int, strength_model: str) -> dict[str, Path]:
    """The noisy, cleaned and gold-label reward models of one draw of noisy pairs. Replicate 0 is the
    world's own (built by `build`); replicate r draws its 1,000 pairs anew and repeats the
    default `strength | clean --flip` pipeline and the reward-model training on them (data seeds 100 + r,
    apart from the world's test pairs and prompts)."""
    if replicate == 0:
        return {d: world / f"rm-{d}" for d in ("noisy", "cleaned", "gold-labels")}
    folder = world / f"replicate{replicate}"
    folder.mkdir(parents=True, exist_ok=True)
    for name, noise in (("noisy", 0.2), ("gold-labels", 0.0)):
        if not (folder / f"{name}.jsonl").exists():
            rlhfkit("synth", "--n", 1000, "--noise", noise, "--seed", 100 + replicate, "--out", folder / f"{name}.jsonl")
    if not (folder / "cleaned.jsonl").exists():
        strength, _ = rlhfkit("strength", folder / "noisy.jsonl", "--model", strength_model)
        (folder / "strength.jsonl").write_text(strength)
        rlhfkit("clean", folder / "strength.jsonl", "--flip", "--out", folder / "cleaned.jsonl")
    for name in ("noisy", "cleaned", "gold-labels"):
        if not (folder / f"rm-{name}" / "rlhfkit.json").exists():
            rlhfkit("train-rm", folder / f"{name}.jsonl", "--model", world / "policy", "--out", folder / f"rm-{name}",
                    "--lr", "1e-3", "--epochs", 6, "--batch-size", 32, "--save-steps", 0, "--seed", replicate)
    return {d: folder / f"rm-{d}" for d in ("noisy", "cleaned", "gold-labels")}


def cleaning(world: Path, result: dict, path: Path, a) -> None:
    """4. Policies against reward models trained on the noisy, the default-cleaned and the gold-label
    pairs, β per label set tuned to the same held-out KL; their gold reward. With --replicates R,
    policy seed s uses the reward models of data draw s mod R, and intervals resample the draws."""
    prompts, eval_prompts = world_paths(world)
    policy, runs_dir = str(world / "policy"), world / "runs" / "cleaning"
    names = [f"seed{s}" for s in a.seed_list]
    replicate_of = [s % a.replicates for s in a.seed_list]
    models = [cleaning_reward_models(world, r, a.strength_model) for r in range(a.replicates)]
    result["seeds"], result["replicates"] = a.seed_list, a.replicates
    betas = result.setdefault("betas", {})
    used, target, target_se = {}, a.target_kl, 0.0
    for data in ("noisy", "cleaned", "gold-labels"):
        reward_of = lambda name, data=data: str(models[int(name[4:]) % a.replicates][data])
        settings_of = lambda name, reward_of=reward_of: dict(policy=policy, reward=reward_of(name), normalize_reward=True,
                                                             steps=a.steps, seed=int(name[4:]))
        if data in a.fixed_betas:
            beta = a.fixed_betas[data][0]
            run_arm(result, path, runs_dir, f"{data}@{beta}", names, lambda name, f=settings_of, beta=beta: {**f(name), "beta": beta},
                    prompts, eval_prompts, lambda name: policy)
            used[data] = f"{data}@{beta}"
            continue
        if data not in betas:
            pilot = dict(policy=policy, reward=str(models[0][data]), normalize_reward=True, steps=a.steps)
            betas[data] = tune_beta(result, path, runs_dir, data, lambda i, pilot=pilot: pilot, prompts, eval_prompts,
                                    policy, a.target_kl, pilots=a.pilots)
            save_json(path, result)
        used[data] = matched_arm(result, path, runs_dir, data, names, settings_of, prompts, eval_prompts,
                                 lambda name: policy, target, a.kl_tolerance, a.kl_rounds, target_se, a.kl_standard_errors)
        matched = only(result["arms"][used[data]], names)  # each later arm is matched to the previous arm's achieved KL
        target, target_se = mean_kl(matched), standard_error(policy_kls(matched))
    result["matched_arms"] = used
    arms = {d: only(result["arms"][k], names) for d, k in used.items()}
    summary = {d: spread_table(arms[d], replicate_of) | {"beta": float(used[d].split("@")[1])} for d in arms}
    mean = lambda means, L: statistics.fmean(means)
    for d in ("cleaned", "gold-labels"):
        summary[f"{d}_minus_noisy"] = paired_difference(arms[d], arms["noisy"], replicate_of, mean)
    summary["share_of_oracle_gain"] = share_of_gain(arms["noisy"], arms["cleaned"], arms["gold-labels"], replicate_of)
    result["summary"] = summary


def share_of_gain(noisy: dict, cleaned: dict, gold: dict, group_of: list[int]) -> dict:
    """(cleaned − noisy) / (gold-labels − noisy) in gold reward, policies paired by seed (and so by
    data draw), with the cluster bootstrap over draws, seeds and prompts."""
    v = [as_table([arm[k]["gold"] for k in noisy]) for arm in (noisy, cleaned, gold)]
    groups = [[i for i in range(len(group_of)) if group_of[i] == g] for g in sorted(set(group_of))]
    mean = lambda j, P, Q: statistics.fmean(policy_means(v[j], P, Q))

    def share(P, Q, L=None):
        oracle = mean(2, P, Q) - mean(0, P, Q)
        return (mean(1, P, Q) - mean(0, P, Q)) / oracle if oracle else float("nan")

    m = len(v[0][0])
    return {"value": share(range(len(group_of)), range(m)), "ci95": cluster_bootstrap(share, groups, m)}


def seed_range(text: str) -> list[int]:
    """``A:B`` → the seeds A … B−1."""
    lo, _, hi = text.partition(":")
    if not (lo.isdigit() and hi.isdigit()) or int(hi) <= int(lo):
        raise argparse.ArgumentTypeError(f"--seeds takes A:B with A < B (seeds A ... B-1), got {text!r}")
    return list(range(int(lo), int(hi)))


def beta_setting(text: str) -> tuple[str, float]:
    """``METHOD=X`` → (METHOD, X)."""
    method, _, value = text.partition("=")
    try:
        return method, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--beta takes METHOD=X, e.g. kl=0.15, got {text!r}") from None


# What each experiment's confirmatory run decides: the summary entry, and the side of 0 its 95%
# interval must lie on. Fixed here, in code, before any confirmatory policy trains.
PRIMARY = {
    "uncertainty": ("var_kl_minus_kl.variance", "negative", "variance of gold reward across policies, var-KL minus KL"),
    "cleaning": ("cleaned_minus_noisy", "positive", "gold reward, cleaned-label reward model minus noisy"),
    "pm": ("kl_gap_change", "same sign as the optimum's", "KL policies' gold gap (unbiased − biased reference) at the "
           "smallest β minus at the largest β"),
    "overopt": ("gold_fall", "negative", "gold reward in the last √KL bin minus in the exploratory run's peak bin"),
}


def regulariser_claims(explored: dict) -> list[dict]:
    """The PM paper's claims about its regularisers, which a pm confirmation decides beside the bias
    check: each lowers PM divergence against KL-RLHF (cPM by 41% in the paper), tested at the exploratory
    run's largest β from the unbiased reference (the theory's case), as a ratio paired by seed."""
    beta = max(explored.get("betas_run") or [], default=None)
    claims = []
    for reg, name in (("cpm", "cPM"), ("pm", "PM")):
        key = f"{reg}_over_kl-unbiased-beta{beta}"
        if key in explored.get("summary", {}):
            claims.append({"statistic": key, "prediction": "negative",
                           "meaning": f"PM divergence of {name} over KL-RLHF's, minus 1 (β {beta}, unbiased reference)"})
    return claims


def summary_entry(summary: dict, dotted: str) -> dict:
    """summary["a"]["b"] for "a.b"; a key that holds a dot itself ("pm_over_kl-unbiased-beta1.0") is read whole."""
    if dotted in summary:
        return summary[dotted]
    head, _, rest = dotted.partition(".")
    return summary_entry(summary[head], rest)


def protocol_from(experiment: str, exploratory_path: Path, seeds: list[int], explored: dict) -> dict:
    """The confirmatory run's plan, read from the exploratory result: its β per arm (the arms it
    matched, or its fixed β), the statistic and the predicted side. Seeds must be new."""
    used = set(explored.get("seeds") or [])
    for arm in explored.get("arms", {}).values():
        used |= {int(name.rsplit("seed", 1)[1]) for name in arm}
    used |= {int(k) for k in explored.get("runs", {})}
    used |= {1000 + i for key in explored.get("beta_pilots", {}).values() for _ in key for i in range(3)}  # pilots
    if used & set(seeds):
        raise SystemExit(f"--confirm: seeds {sorted(used & set(seeds))} were used by the exploratory run "
                         f"{exploratory_path}: give fresh --seeds")
    key, side, words = PRIMARY[experiment]
    plan = {"exploratory": str(exploratory_path), "exploratory_command": explored.get("command"),
            "exploratory_seeds": sorted(used), "seeds": seeds, "statistic": key, "meaning": words,
            "settings": explored.get("settings")}
    if experiment == "pm":
        change = explored["summary"]["kl_optimum_gap_change"]["value"]
        plan["prediction"] = "positive" if change > 0 else "negative"
    else:
        plan["prediction"] = side
    plan["decision"] = f"confirmed when the 95% interval lies entirely on the {plan['prediction']} side of 0"
    if "matched_arms" in explored:
        plan["betas"] = {m: float(k.split("@")[1]) for m, k in explored["matched_arms"].items()}
    if experiment == "overopt":
        plan["peak_sqrt_kl"] = explored["summary"]["gold_peak_sqrt_kl"]
    if experiment == "pm" and (claims := regulariser_claims(explored)):
        plan["claims"] = claims
    plan["exploratory_value"] = summary_entry(explored["summary"], key)
    return plan


PLAN_KEYS = ("seeds", "statistic", "prediction", "betas", "peak_sqrt_kl", "settings", "claims")


# The design of a run, beyond β and seeds: stored in every result, imposed on its confirmation.
SETTINGS = {"uncertainty": ("steps", "construction"), "cleaning": ("steps", "replicates", "strength_model"),
            "pm": ("steps", "optimum_samples", "regularizers"), "overopt": ("steps", "proxy_pairs")}


def verdict(summary: dict, plan: dict) -> dict:
    entry = summary_entry(summary, plan["statistic"])
    if not entry.get("ci95"):
        return {"statistic": plan["statistic"], "value": entry.get("value"), "ci95": None,
                "prediction": plan["prediction"], "verdict": "not decided (too few policies for an interval)"}
    lo, hi = entry["ci95"]
    holds = lo > 0 if plan["prediction"] == "positive" else hi < 0
    return {"statistic": plan["statistic"], "value": entry["value"], "ci95": entry["ci95"],
            "prediction": plan["prediction"], "verdict": "confirmed" if holds else "not confirmed"}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("experiment", choices=["build", "step-cost", "overopt", "uncertainty", "pm", "cleaning"])
    ap.add_argument("--world", default="bench-out/synth_world")
    ap.add_argument("--steps", type=int, default=60, help="PPO steps per policy")
    ap.add_argument("--seeds", type=seed_range, default=None, metavar="A:B",
                    help="policy seeds A ... B-1 (uncertainty: every reward model with every seed); default 0:5 "
                         "(uncertainty: as many as --policies needs)")
    ap.add_argument("--policies", type=int, default=None,
                    help="uncertainty: the first N (reward model, seed) policies; pm, cleaning: seeds 0:N")
    ap.add_argument("--beta", type=beta_setting, action="append", default=[], metavar="METHOD=X",
                    help="run METHOD's arm at this β instead of tuning it (repeat for several β: the frontier)")
    ap.add_argument("--confirm", metavar="EXPLORATORY_JSON",
                    help="a confirmatory run: β, statistic and prediction are read from this exploratory result "
                         "and written to the result before any policy trains; --seeds must be new")
    ap.add_argument("--construction", choices=["heads", "models"], default="heads",
                    help="uncertainty: the reward models are linear heads on one backbone, or independently "
                         "trained reward models")
    ap.add_argument("--target-kl", type=float, default=3.0, help="held-out KL (nats per response) every arm is tuned to")
    ap.add_argument("--kl-tolerance", type=float, default=0.1, help="relative gap between arms' mean KLs accepted as matched")
    ap.add_argument("--kl-standard-errors", type=float, default=0.0,
                    help="also accept a gap within this many standard errors of the arms' mean KLs (0: off; a "
                         "heavy-tailed arm passes more easily, so the match can end on the arm with the most drifters)")
    ap.add_argument("--kl-rounds", type=int, default=4, help="arm runs per method at most while matching the KL")
    ap.add_argument("--pilots", type=int, default=3, help="pilot policies per β when tuning β")
    ap.add_argument("--betas", type=float, nargs="+", default=[1.0, 0.1], help="pm: the β values")
    ap.add_argument("--regularizers", nargs="+", choices=["kl", "pm", "cpm"], default=["kl", "pm", "cpm"],
                    help="pm: the arms' regularisers (kl alone suffices for the bias check across β)")
    ap.add_argument("--optimum-samples", type=int, default=8,
                    help="pm: reference samples per prompt for the KL optimum's importance-weighted estimate")
    ap.add_argument("--replicates", type=int, default=1,
                    help="cleaning: reward models per label set, each from its own draw of noisy pairs")
    ap.add_argument("--proxy-pairs", type=int, default=None, help="overopt: train the proxy on only this many noisy pairs")
    ap.add_argument("--strength-model", default="minilm", help="cleaning replicates: strength's --model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--draws", type=int, default=2000, help="bootstrap resamples per interval")
    ap.add_argument("--result", default=None, help="result JSON (default results/synth_world_<experiment>[_confirm]_cpu.json)")
    ap.add_argument("--no-figure", action="store_true")
    a = ap.parse_args(argv)
    global DRAWS
    DRAWS = a.draws
    import torch

    torch.set_num_threads(a.threads)
    world = Path(a.world)
    if a.experiment == "build":
        build(world)
        return {}
    a.fixed_betas = {}
    if a.experiment == "pm" and "kl" not in a.regularizers:
        raise SystemExit("--regularizers must include kl: the bias check compares the KL policies with the KL optimum")
    methods = {"uncertainty": ("kl", "var-kl"), "cleaning": ("noisy", "cleaned", "gold-labels")}.get(a.experiment, ())
    for method, beta in a.beta:
        if method not in methods:
            raise SystemExit(f"--beta {method}={beta}: {a.experiment} has no arm {method!r} to fix "
                             f"(its arms: {', '.join(methods) or 'none; pm takes --betas'})")
        a.fixed_betas.setdefault(method, []).append(beta)
    tag = a.experiment.replace("-", "_") + ("_confirm" if a.confirm else "")
    path = Path(a.result) if a.result else RESULTS / f"synth_world_{tag}_cpu.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result["command"] = "python benchmarks/synth_world.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result["draws"] = a.draws
    if a.confirm:
        if a.seeds is None:
            raise SystemExit("--confirm needs --seeds A:B, seeds the exploratory run never used")
        plan = protocol_from(a.experiment, Path(a.confirm), a.seeds, json.loads(Path(a.confirm).read_text()))
        fixed = {k: v for k, v in result.get("protocol", {}).items() if k in PLAN_KEYS and v is not None}
        if any(v != plan.get(k) for k, v in fixed.items()):  # a key a plan of an older version lacks is not a change
            raise SystemExit(f"{path} holds a confirmatory run with another protocol: it is not changed once fixed")
        result["protocol"] = result.get("protocol", plan)
        for name, value in (plan.get("settings") or {}).items():  # the exploratory run's design, not the command line's
            setattr(a, name, value)
        for method, beta in plan.get("betas", {}).items():
            a.fixed_betas[method] = [beta]
        if a.experiment == "pm":
            a.betas = json.loads(Path(a.confirm).read_text())["betas_run"]
        save_json(path, result)  # the plan is on disk before the first confirmatory policy trains
    a.seed_list = a.seeds or {"pm": list(range(a.policies or 20)), "cleaning": list(range(a.policies or 20)),
                              "overopt": list(range(5))}.get(a.experiment)
    if a.experiment == "uncertainty" and a.seed_list is None:
        heads = ensemble_size(world / ("ensemble" if a.construction == "heads" else "ensemble-models"))
        a.seed_list = list(range(math.ceil((a.policies or 20) / heads)))
        a.policies = a.policies or 20
    elif a.experiment == "uncertainty" and a.seeds is not None:
        a.policies = None  # every reward model with every seed
    result["settings"] = {name: getattr(a, name) for name in SETTINGS[a.experiment]} if a.experiment in SETTINGS else None
    if a.experiment in ("uncertainty", "cleaning") and not a.confirm:  # how β was matched, where it was
        result["matching"] = {"target_kl": a.target_kl, "kl_tolerance": a.kl_tolerance,
                              "kl_standard_errors": a.kl_standard_errors, "kl_rounds": a.kl_rounds}
    if a.experiment == "step-cost":
        result.update(step_cost(world))
    elif a.experiment == "overopt":
        overopt(world, result, path, seeds=a.seed_list, steps=a.steps, proxy_pairs=a.proxy_pairs)
        peak = result.get("protocol", {}).get("peak_sqrt_kl")
        result["summary"] = overopt_summary(result, a.seed_list, peak_sqrt_kl=peak)
    else:
        {"uncertainty": uncertainty, "pm": pm, "cleaning": cleaning}[a.experiment](world, result, path, a)
    if a.confirm:
        result["verdict"] = verdict(result["summary"], result["protocol"])
        if result["protocol"].get("claims"):
            result["claim_verdicts"] = [verdict(result["summary"], c) for c in result["protocol"]["claims"]]
    save_json(path, result)
    if not a.no_figure and a.experiment != "step-cost":
        FIGURES.mkdir(parents=True, exist_ok=True)
        name = path.stem.removesuffix("_cpu")  # a figure per result file: another --result does not overwrite it
        figure(a.experiment, result, FIGURES / f"{name}.png")
        if a.experiment == "uncertainty":
            frontier_figure(result, FIGURES / f"{name}_frontier.png")
    print(json.dumps(result.get("verdict", {}) | {"claims": result.get("claim_verdicts", []),
                                                   "summary": result.get("summary", {})}, indent=1)[:4000])
    return result


def frontier_figure(result: dict, png: Path) -> None:
    """Variance of gold reward across policies against mean and median KL, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frontier = result["summary"]["frontier"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for method, colour in (("kl", "tab:blue"), ("var-kl", "tab:orange")):
        for ax, x in zip(axes, ("kl", "kl_median")):
            points = sorted((v for k, v in frontier.items() if k.split("@")[0] == method), key=lambda v: v[x])
            ys = [p["variance_across_policies"] for p in points]
            err = [[y - p["variance_across_policies_ci95"][0] for y, p in zip(ys, points)],
                   [p["variance_across_policies_ci95"][1] - y for y, p in zip(ys, points)]]
            ax.errorbar([p[x] for p in points], ys, yerr=err, marker="o", capsize=3, color=colour, label=method)
    axes[0].set(xlabel="mean KL to the reference (nats)", ylabel="variance of gold reward across policies (95% CI)")
    axes[1].set(xlabel="median KL to the reference (nats)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"synth world: variance–KL frontier ({result.get('construction', 'heads')})")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def figure(experiment: str, result: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if experiment == "overopt":
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, run in enumerate(result["runs"].values()):
            x = [math.sqrt(max(r["kl"], 0)) for r in run]
            ax.plot(x, [r["proxy"] for r in run], color="tab:orange", alpha=0.3, lw=0.8, label="proxy (per seed)" if i == 0 else None)
            ax.plot(x, [r["gold"] for r in run], color="tab:blue", alpha=0.3, lw=0.8, label="gold (per seed)" if i == 0 else None)
        bins = result["summary"]["bins"]
        ax.errorbar([b["sqrt_kl"] for b in bins], [b["gold"] for b in bins],
                    yerr=[[b["gold"] - b["gold_ci95"][0] for b in bins], [b["gold_ci95"][1] - b["gold"] for b in bins]],
                    color="tab:blue", marker="o", label="gold, binned (95% CI over seeds)")
        ax.plot([b["sqrt_kl"] for b in bins], [b["proxy"] for b in bins], "o-", color="tab:orange", label="proxy, binned")
        ax.set(xlabel="sqrt(KL to the reference), per training batch", ylabel="reward per response",
               title="Over-optimisation: proxy RM from 1,000 noisy pairs, no KL penalty")
        ax.legend(fontsize=7)
    else:
        summary = result["summary"]
        key = "gold"
        matched = result.get("matched_arms")
        arms = list(matched) if matched else list(result["arms"])
        fig, axes = plt.subplots(1, 2, figsize=(max(11, 1.1 * len(arms)), 4.6))
        for i, arm in enumerate(arms):
            values = [statistics.fmean(p[key]) for p in result["arms"][matched[arm] if matched else arm].values()]
            axes[0].scatter([i + random.Random(j).uniform(-0.15, 0.15) for j in range(len(values))], values, s=12, alpha=0.6)
            row = summary[arm] if "mean" in summary[arm] else summary[arm]["gold"]
            axes[0].errorbar([i], [row["mean"]], yerr=[[row["mean"] - row["mean_ci95"][0]], [row["mean_ci95"][1] - row["mean"]]],
                             color="black", marker="_", ms=20, capsize=4)
            if experiment == "pm":
                pmrow = summary[arm]["pm_divergence"]
                axes[1].errorbar([i], [pmrow["mean"]], yerr=[[pmrow["mean"] - pmrow["mean_ci95"][0]],
                                                           [pmrow["mean_ci95"][1] - pmrow["mean"]]], marker="o", capsize=4)
            else:
                ci = row.get("variance_ci95") or row["variance_across_policies_ci95"]
                axes[1].errorbar([i], [row["variance_across_policies"]],
                                 yerr=[[row["variance_across_policies"] - ci[0]], [ci[1] - row["variance_across_policies"]]],
                                 marker="o", capsize=4)
        for ax in axes:
            ax.set_xticks(range(len(arms)))
            short = lambda a: a.replace("-unbiased", " unbiased").replace("-biased", " biased").replace("-beta", ", β ")
            ax.set_xticklabels([f"{short(a)}\nKL {summary[a]['kl']:.2f}" for a in arms], fontsize=7, rotation=40, ha="right")
            ax.grid(alpha=0.3)
        axes[0].set(ylabel="gold reward per policy (dots) and mean (95% CI)")
        axes[1].set(ylabel="PM divergence (95% CI)" if experiment == "pm" else "variance of gold reward across policies (95% CI)")
        if experiment == "pm":
            axes[1].set_yscale("log")
        fig.suptitle(f"synth world: {experiment}")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
