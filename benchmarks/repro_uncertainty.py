"""Uncertainty-aware RLHF at CPU scale: variance-aware vs vanilla PPO with an ensemble reward.

Preference pairs from the movie-review sentences in ../shared/data (rt-polarity): after a short
review opening, a positive sentence is preferred to a negative one. A K = 10 ensemble of heads on
frozen minilm learns that preference. SmolLM2-135M-Instruct continues 2-8-word review openings
with PPO (2 epochs per batch to fit a CPU), each policy optimising one head's reward: vanilla KL (β 0.2, lr 1.41e-5) vs
variance-aware KL (σ from the ensemble, β 0.05, lr 1.5e-5). A separate scorer, VADER's lexicon
sentiment (not the reward model), judges each policy's continuations of held-out openings; the
paper's claim is that variance-aware policies have lower variance across runs (0.012 vs 0.06).

    python benchmarks/repro_uncertainty.py [--heads-used 2] [--steps 8] [--out bench-out/repro_uncertainty]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

from _run import read_jsonl, rlhfkit, write_jsonl

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_bytes().decode("utf-8", errors="replace").splitlines() if line.strip()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--policy", default="smollm2-135m")
    ap.add_argument("--heads-used", type=int, default=2, help="policies per method (one head each)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--pairs", type=int, default=1500)
    ap.add_argument("--out", default="bench-out/repro_uncertainty")
    a = ap.parse_args()
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    pos, neg = lines(Path(a.data) / "rt-polarity.pos"), lines(Path(a.data) / "rt-polarity.neg")
    rng = random.Random(0)
    openings = [" ".join(s.split()[: rng.randint(2, 8)]) for s in rng.sample(pos + neg, 400)]
    pairs = [{"prompt": rng.choice(openings), "chosen": p, "rejected": n}
             for p, n in zip(rng.sample(pos, a.pairs), rng.sample(neg, a.pairs))]
    write_jsonl(out / "pairs.jsonl", pairs)
    write_jsonl(out / "train-prompts.jsonl", [{"prompt": o} for o in openings[:300]])
    write_jsonl(out / "test-prompts.jsonl", [{"prompt": o} for o in openings[300:364]])
    if not (out / "ensemble" / "heads.safetensors").exists():
        rlhfkit("ensemble", out / "pairs.jsonl", "--model", "minilm", "--heads", 10, "--out", out / "ensemble")
    vader = SentimentIntensityAnalyzer()

    def judge(gens_path: Path) -> float:
        return statistics.fmean(vader.polarity_scores(g["response"])["compound"] for g in read_jsonl(gens_path))

    rlhfkit("generate", out / "test-prompts.jsonl", "--policy", a.policy, "--max-new-tokens", 10, "--out", out / "gens-reference.jsonl")
    result: dict = {"policy": a.policy, "steps": a.steps, "judge": "VADER compound sentiment, mean over 64 held-out openings",
                    "reference": judge(out / "gens-reference.jsonl")}
    common = ["--batch-size", 8, "--mini-batch-size", 4, "--ppo-epochs", 2, "--max-new-tokens", 10, "--steps", a.steps,
              "--save-steps", 0]
    methods = {"vanilla": ["--regularizer", "kl", "--beta", 0.2, "--lr", "1.41e-5"],
               "variance_aware": ["--regularizer", "var-kl", "--beta", 0.05, "--lr", "1.5e-5"]}
    for method, flags in methods.items():
        scores, kls = [], []
        for head in range(a.heads_used):
            name = f"{method}-h{head}"
            rlhfkit("ppo", "--policy", a.policy, "--reward", out / "ensemble", "--reward-head", head, "--prompts",
                    out / "train-prompts.jsonl", *flags, *common, "--seed", head, "--out", out / name)
            rlhfkit("generate", out / "test-prompts.jsonl", "--policy", out / name, "--max-new-tokens", 10,
                    "--out", out / f"gens-{name}.jsonl")
            scores.append(judge(out / f"gens-{name}.jsonl"))
            kls.append(read_jsonl(out / name / "log.jsonl")[-1]["kl"])
        result[method] = {"judge_scores": scores, "judge_mean": statistics.fmean(scores),
                          "judge_variance": statistics.pvariance(scores), "final_kl": kls}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
