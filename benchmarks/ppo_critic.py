"""Does the critic's design decide whether PPO collapses? KL-regularised PPO in the synth world
(benchmarks/synth_world.py build) against the gold reward, one policy per (critic, seed), judged on
the world's held-out prompts.

    python benchmarks/synth_world.py build                               # once: the world
    python benchmarks/ppo_critic.py --critic shared-body --seeds 0:10    # the old default
    python benchmarks/ppo_critic.py --critic shared --seeds 0:10         # the new default
    python benchmarks/ppo_critic.py --critic separate --seeds 0:10
    python benchmarks/ppo_critic.py --summary                            # the table, from the saved runs

The three critics: ``shared-body``, a value head whose loss also trains the policy's body, clipped
with it (TRL v0's value head, rlhfkit's default until the fix); ``shared``, the same head on detached
features; ``separate``, a copy of the policy as the critic, clipped on its own. A policy counts as
collapsed when its held-out KL to the reference exceeds 50 nats (the world's collapsed policies sit
at 130-390 nats, the others below 10). The frontier is the reference tilted by exp(λ·gold), from
512 reference samples per held-out prompt: the most gold a policy can have at a given KL (up to
the KL of the best sample seen, about 11 nats; beyond it the gap of a collapsed policy is only
max gold − its gold). Each critic's runs go to their own file
(results/ppo_critic_<critic>_cpu.json), so two critics can train side by side, one thread each.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import statistics
import sys
from pathlib import Path

from _run import save_json
from synth_world import counts_by_prompt, judge_policy, kl_optimum_gold, seed_range, train_policy, world_paths

RESULTS = Path(__file__).with_name("results")
CRITICS = ("shared-body", "shared", "separate")
COLLAPSED_KL = 50.0


def result_path(critic: str) -> Path:
    return RESULTS / f"ppo_critic_{critic}_cpu.json"


def run(world: Path, critic: str, seeds: list[int], beta: float, steps: int) -> dict:
    """Train and judge one policy per seed (resuming a saved file); each policy's numbers are kept."""
    path = result_path(critic)
    result = json.loads(path.read_text()) if path.exists() else {}
    if result and (result["beta"], result["steps"]) != (beta, steps):
        raise SystemExit(f"{path} holds runs at β {result['beta']}, {result['steps']} steps: move it aside first")
    result.update(critic=critic, beta=beta, steps=steps, command="python benchmarks/ppo_critic.py " + " ".join(sys.argv[1:]))
    policies = result.setdefault("policies", {})
    prompts, eval_prompts = world_paths(world)
    reference = str(world / "policy")
    for seed in seeds:
        if str(seed) in policies:
            continue
        run_dir = world / "runs" / "ppo_critic" / f"{critic}-{seed}"
        trained = train_policy(run_dir, prompts, policy=reference, reward="rlhfkit.synth:gold", regularizer="kl",
                               beta=beta, steps=steps, seed=seed, critic=critic)
        judged = judge_policy(str(run_dir), reference, eval_prompts)
        log = trained["log"]
        policies[str(seed)] = {
            "gold": statistics.fmean(judged["gold"]), "kl": statistics.fmean(judged["kl"]),
            "train_max_kl": max(e["kl"] for e in log), "train_max_value_loss": max(e["value_loss"] for e in log),
            "first_step_past_collapse": next((e["step"] for e in log if e["kl"] > COLLAPSED_KL), None),
            "seconds_train": trained["seconds_train"], "example": judged["example"]}
        shutil.rmtree(run_dir, ignore_errors=True)
        save_json(path, result)
        p = policies[str(seed)]
        print(f"{critic}/seed{seed}: gold {p['gold']:+.3f}  kl {p['kl']:.3f}  train max kl {p['train_max_kl']:.1f}", flush=True)
    return result


def reference_golds(world: Path, samples: int = 512) -> dict[float, int]:
    """How many of the reference's samples (``samples`` per held-out prompt) score each gold value:
    the tilted family π_ref·exp(λ·gold) is the reward–KL frontier (saved, as it costs a minute)."""
    path = RESULTS / "ppo_critic_reference_cpu.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("world") == str(world) and saved.get("samples_per_prompt") == samples:
            return {float(g): c for g, c in saved["gold_counts"]}
    _, eval_prompts = world_paths(world)
    theory = kl_optimum_gold(str(world / "policy"), eval_prompts, 1.0, samples)
    pooled: dict[float, int] = {}
    for counts in counts_by_prompt(theory):
        for g, c in counts.items():
            pooled[g] = pooled.get(g, 0) + c
    save_json(path, {"world": str(world), "samples_per_prompt": samples, "samples": theory["samples"],
                     "gold_counts": sorted(pooled.items())})
    return pooled


def tilted(counts: dict[float, int], lam: float) -> tuple[float, float]:
    """Gold and KL to the reference of π_ref·exp(λ·gold)/Z, over the reference's samples."""
    top, n = max(counts), sum(counts.values())
    weight = {g: math.exp(lam * (g - top)) for g in counts}
    z = sum(weight[g] * c for g, c in counts.items()) / n
    gold = sum(weight[g] * c * g for g, c in counts.items()) / (z * n)
    return gold, lam * (gold - top) - math.log(z)


def frontier_gold(counts: dict[float, int], kl: float) -> float:
    """The most gold any policy can have at this KL to the reference (the tilted policy at that KL:
    KL-regularised RL's optimum for some β), by bisection on λ (its KL grows with λ)."""
    lo, hi = 0.0, 50.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if tilted(counts, mid)[1] < kl else (lo, mid)
    return tilted(counts, lo)[0]


def mean_interval(values: list[float], draws: int = 4000, seed: int = 0) -> list[float]:
    """95% percentile interval of the mean over policies resampled."""
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choice(values) for _ in values) for _ in range(draws))
    return [means[int(0.025 * draws)], means[int(0.975 * draws) - 1]]


def fisher_exact(hits_a: int, n_a: int, hits_b: int, n_b: int) -> float:
    """Two-sided p of Fisher's exact test for two rates (collapses of one critic against another's):
    the probability, with both margins fixed, of a table no more likely than the one observed."""
    hits, n = hits_a + hits_b, n_a + n_b
    chance = lambda x: math.comb(n_a, x) * math.comb(n_b, hits - x) / math.comb(n, hits)
    observed = chance(hits_a)
    tables = range(max(0, hits - n_b), min(hits, n_a) + 1)
    return min(1.0, sum(chance(x) for x in tables if chance(x) <= observed * (1 + 1e-9)))


def summary(results: list[dict], reference: dict[float, int]) -> dict:
    """Per critic: collapses; gold, KL, the KL-regularised objective gold − β·KL (what the run
    maximises) and the gap below the reward–KL frontier at the policy's own KL (how far from the
    best policy that stays as close to the reference), over every policy and over those that did
    not collapse, with intervals."""
    out = {}
    if len({(r["beta"], r["steps"]) for r in results}) > 1:
        raise SystemExit("the saved critics' runs differ in β or steps: summarise runs of one design")
    optimum_gold, optimum_kl = tilted(reference, 1.0 / results[0]["beta"]) if results else (None, None)
    for r in results:
        pol = list(r["policies"].values())
        kept = [p for p in pol if p["kl"] <= COLLAPSED_KL]
        objective = lambda ps: [p["gold"] - r["beta"] * p["kl"] for p in ps]
        gap = lambda ps: [frontier_gold(reference, max(p["kl"], 0.0)) - p["gold"] for p in ps]
        row = {"policies": len(pol), "collapsed": len(pol) - len(kept), "beta": r["beta"], "steps": r["steps"],
               "optimum": {"gold": optimum_gold, "kl": optimum_kl, "objective": optimum_gold - r["beta"] * optimum_kl}}
        for name, ps in (("all", pol), ("not_collapsed", kept)):
            if len(ps) < 2:
                continue
            for key, values in (("gold", [p["gold"] for p in ps]), ("kl", [p["kl"] for p in ps]),
                                ("objective", objective(ps)), ("gap_below_frontier", gap(ps))):
                row[f"{key}_{name}"] = statistics.fmean(values)
                row[f"{key}_{name}_ci95"] = mean_interval(values)
        out[r["critic"]] = row
    critics = list(out)
    out["collapse_rates_fisher_p"] = {f"{x} vs {y}": fisher_exact(out[x]["collapsed"], out[x]["policies"],
                                                                   out[y]["collapsed"], out[y]["policies"])
                                      for i, x in enumerate(critics) for y in critics[i + 1:]}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", default="bench-out/synth_world")
    ap.add_argument("--critic", choices=CRITICS)
    ap.add_argument("--seeds", type=seed_range, default=list(range(10)), metavar="A:B")
    ap.add_argument("--beta", type=float, default=2.0)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--summary", action="store_true", help="print the table of every saved critic's runs")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    if a.critic:
        run(Path(a.world), a.critic, a.seeds, a.beta, a.steps)
    saved = [json.loads(result_path(c).read_text()) for c in CRITICS if result_path(c).exists()]
    table = summary(saved, reference_golds(Path(a.world)))
    if a.summary:
        save_json(RESULTS / "ppo_critic_summary_cpu.json", table)
    print(json.dumps(table, indent=1))
    return table


if __name__ == "__main__":
    main()
