"""Uncertainty-aware RLHF at CPU scale: variance-aware vs vanilla PPO with an ensemble reward, run until the policies move.

Preference pairs from the movie-review sentences in ../shared/data (rt-polarity): after a short
review opening, a positive sentence is preferred to a negative one. A K = 10 ensemble of heads on
frozen minilm learns that preference. SmolLM2-135M-Instruct continues 2-8-word review openings
with PPO, each policy optimising one head's reward (as in the paper): vanilla KL (β 0.2, lr 1.41e-5)
vs variance-aware KL (σ from the ensemble, β 0.05, lr 1.5e-5). An independent scorer, VADER's
lexicon sentiment (not the reward model), judges each policy's continuations of held-out openings
every --eval-every steps. The paper's claim: variance-aware policies vary less across runs (judged
reward variance 0.012 vs 0.06, means 0.22 vs 0.34, with 40 policies per method).

Reported per method at the last step: the mean judged score over policies and prompts and the
variance of the per-policy means across policies, each with a 95% bootstrap interval (policies and
prompts resampled). Written under --out as it goes; the script resumes where it stopped.

    python benchmarks/repro_uncertainty.py [--heads 0 1 2] [--steps 32] [--eval-every 16]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

from _run import (
    bootstrap_interval,
    last_common_eval,
    plot_runs,
    read_jsonl,
    rlhfkit,
    save_json,
    train_and_evaluate,
    write_jsonl,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PAPER = {"vanilla": {"mean": 0.34, "variance": 0.06}, "variance_aware": {"mean": 0.22, "variance": 0.012}}
METHODS = {"vanilla": ["--regularizer", "kl", "--beta", 0.2, "--lr", "1.41e-5"],
           "variance_aware": ["--regularizer", "var-kl", "--variance-power", 1, "--beta", 0.05, "--lr", "1.5e-5"]}


def lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_bytes().decode("utf-8", errors="replace").splitlines() if line.strip()]


def judged(policy, prompts: Path, gens: Path, max_new_tokens: int) -> list[float]:
    """VADER compound sentiment of one sampled continuation per held-out opening."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    rlhfkit("generate", prompts, "--policy", policy, "--max-new-tokens", max_new_tokens, "--seed", 1234, "--out", gens)
    vader = SentimentIntensityAnalyzer()
    return [vader.polarity_scores(g["response"])["compound"] for g in read_jsonl(gens)]


def summarise(result: dict, heads: list[int]) -> dict:
    ref = result["reference"]["scores"]
    summary: dict = {"reference": {"mean": statistics.fmean(ref),
                                   "ci95": bootstrap_interval(lambda _, p: statistics.fmean(ref[i] for i in p), 1, len(ref))}}
    for method in METHODS:
        runs = [result["runs"].get(f"{method}-h{h}", {}) for h in heads]
        step = last_common_eval(runs)
        if step is None:
            continue
        scores = [r["evals"][step]["scores"] for r in runs]

        def policy_means(runs_idx, prompts_idx, scores=scores):
            return [statistics.fmean(scores[r][p] for p in prompts_idx) for r in runs_idx]

        def mean(runs_idx, prompts_idx):
            return statistics.fmean(policy_means(runs_idx, prompts_idx))

        def variance(runs_idx, prompts_idx):
            return statistics.pvariance(policy_means(runs_idx, prompts_idx))

        every_run, every_prompt = range(len(scores)), range(len(scores[0]))
        summary[method] = {"step": int(step), "policies": len(scores),
                           "per_policy": policy_means(every_run, every_prompt),
                           "mean": mean(every_run, every_prompt), "mean_ci95": bootstrap_interval(mean, len(scores), len(scores[0])),
                           "variance": variance(every_run, every_prompt),
                           "variance_ci95": bootstrap_interval(variance, len(scores), len(scores[0])),
                           "final_kl": [r["log"][-1]["kl"] for r in runs]}
    return summary


def plot(result: dict, heads: list[int], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    colours = {"vanilla": "tab:blue", "variance-aware": "tab:green"}
    runs = {m.replace("_", "-"): [result["runs"][f"{m}-h{h}"] for h in heads if f"{m}-h{h}" in result["runs"]] for m in METHODS}
    plot_runs(axes, runs, colours, lambda e: statistics.fmean(e["scores"]), statistics.fmean(result["reference"]["scores"]))
    axes[1].axhspan(1.2, 1.4, color="grey", alpha=0.2, label="paper's final KL, 1.2-1.4")
    axes[0].set(title="Training reward (one head each)", xlabel="PPO step", ylabel="mean reward per batch")
    axes[1].set(title="KL to the reference (training batches)", xlabel="PPO step", ylabel="nats per response")
    axes[2].set(title="Judged sentiment (VADER), held-out openings", xlabel="PPO step", ylabel="mean compound score")
    s = result.get("summary", {})
    text = ["variance across policies at the last step: "
            + ", ".join(f"{m.replace('_', '-')} {s[m]['variance']:.4f}" for m in METHODS if m in s),
            "paper (40 policies, another judge): vanilla 0.06, variance-aware 0.012"]
    axes[2].text(0.02, 0.02, "\n".join(text), transform=axes[2].transAxes, fontsize=7, va="bottom")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle("Uncertainty-aware RLHF at CPU scale: SmolLM2-135M, one policy per reward head")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--policy", default="smollm2-135m")
    ap.add_argument("--heads", type=int, nargs="+", default=[0, 1, 2], help="one policy per head and method")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                    help="run only these (e.g. one per process, each with its own --result; merge with --merge)")
    ap.add_argument("--merge", nargs="*", default=[], help="result files of other processes to fold into --result")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--eval-every", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=128, help="held-out openings judged")
    ap.add_argument("--pairs", type=int, default=1500)
    ap.add_argument("--out", default="bench-out/repro_uncertainty_long")
    ap.add_argument("--result", default=str(Path(__file__).with_name("results") / "repro_uncertainty_long_cpu.json"))
    a = ap.parse_args()
    out, result_path = Path(a.out), Path(a.result)
    out.mkdir(parents=True, exist_ok=True)
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    result.update({"policy": a.policy, "batch_size": a.batch_size, "max_new_tokens": 10, "held_out_prompts": a.prompts,
                   "judge": "VADER compound sentiment of one continuation per held-out opening",
                   "command": "python benchmarks/repro_uncertainty.py " + " ".join(
                       f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                       for k, v in vars(a).items() if k not in ("out", "result", "data", "merge"))})
    result.setdefault("runs", {})
    for other in a.merge:
        for name, run in json.loads(Path(other).read_text()).get("runs", {}).items():
            if len(run.get("evals", {})) >= len(result["runs"].get(name, {}).get("evals", {})):
                result["runs"][name] = run
    pos, neg = lines(Path(a.data) / "rt-polarity.pos"), lines(Path(a.data) / "rt-polarity.neg")
    rng = random.Random(0)
    openings = [" ".join(s.split()[: rng.randint(2, 8)]) for s in rng.sample(pos + neg, 300 + a.prompts)]
    pairs = [{"prompt": rng.choice(openings[:300]), "chosen": p, "rejected": n}
             for p, n in zip(rng.sample(pos, a.pairs), rng.sample(neg, a.pairs))]
    write_jsonl(out / "pairs.jsonl", pairs)
    write_jsonl(out / "train-prompts.jsonl", [{"prompt": o} for o in openings[:300]])
    test_prompts = out / "test-prompts.jsonl"
    write_jsonl(test_prompts, [{"prompt": o} for o in openings[300:]])
    if not (out / "ensemble" / "heads.safetensors").exists():
        rlhfkit("ensemble", out / "pairs.jsonl", "--model", "minilm", "--heads", 10, "--out", out / "ensemble")
    if "reference" not in result:
        result["reference"] = {"scores": judged(a.policy, test_prompts, out / "gens-reference.jsonl", 10)}
        save_json(result_path, result)
    common = ["--policy", a.policy, "--reward", out / "ensemble", "--prompts", out / "train-prompts.jsonl",
              "--batch-size", a.batch_size, "--mini-batch-size", a.batch_size // 2, "--ppo-epochs", 2,
              "--max-new-tokens", 10, "--sample-steps", 0]
    for head in a.heads:
        for method in a.methods:
            flags = METHODS[method]
            name = f"{method}-h{head}"
            run = result["runs"].setdefault(name, {"evals": {}, "seconds": 0.0})
            train_and_evaluate(run, out / name, a.steps, a.eval_every, [*common, *flags, "--reward-head", head, "--seed", head],
                               lambda d: {"scores": judged(d, test_prompts, out / f"gens-{d.name}.jsonl", 10)},
                               lambda: save_json(result_path, result))
    result["summary"] = summarise(result, a.heads)
    save_json(result_path, result)
    plot(result, a.heads, result_path.with_suffix(".png"))
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
