"""PM RLHF at CPU scale: KL-RLHF vs conditional preference matching (cpm) PPO on smollm2-135m.

A minilm reward model is trained on synth film-review pairs; the policy (SmolLM2-135M-Instruct)
is tuned against it with PPO for a few steps (2 epochs per batch, to fit a CPU), once with the KL regulariser and once with cpm
(β = 1, the theory's case; α = 0.3); then PM divergence (β = 1) and generation metrics are
measured on held-out prompts. The paper's claim: cpm lowers the PM divergence (1.16 → 0.68 for
OPT-1.3B). At this scale (a dozen PPO steps) expect small differences; the command shows the
pipeline and the measurement, not the paper's effect size.

    python benchmarks/repro_pm_rlhf.py [--steps 8] [--out bench-out/repro_pm_rlhf]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _run import read_jsonl, rlhfkit, write_jsonl


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default="smollm2-135m")
    ap.add_argument("--rm-model", default="minilm")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--out", default="bench-out/repro_pm_rlhf")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rlhfkit("synth", "--n", 600, "--seed", 0, "--out", out / "pairs.jsonl")
    rlhfkit("synth", "--n", 200, "--seed", 7, "--out", out / "test.jsonl")
    if not (out / "rm" / "rlhfkit.json").exists():
        rlhfkit("train-rm", out / "pairs.jsonl", "--model", a.rm_model, "--out", out / "rm", "--lr", "5e-5",
                "--batch-size", 16, "--warmup-ratio", 0.1, "--save-steps", 0)
    write_jsonl(out / "train-prompts.jsonl", [{"prompt": r["prompt"]} for r in read_jsonl(out / "pairs.jsonl")[:64]])
    write_jsonl(out / "test-prompts.jsonl", [{"prompt": r["prompt"]} for r in read_jsonl(out / "test.jsonl")[: a.prompts]])
    ppo = ["--batch-size", 8, "--mini-batch-size", 4, "--ppo-epochs", 2, "--max-new-tokens", 24, "--lr", "5e-6", "--beta", 1.0,
           "--top-p", 0.9, "--steps", a.steps, "--save-steps", 0, "--seed", 0]
    result: dict = {"policy": a.policy, "steps": a.steps, "beta": 1.0, "alpha": 0.3}
    for name, extra in (("kl", ["--regularizer", "kl"]), ("cpm", ["--regularizer", "cpm", "--alpha", 0.3])):
        _, s = rlhfkit("ppo", "--policy", a.policy, "--reward", out / "rm", "--prompts", out / "train-prompts.jsonl",
                       *extra, *ppo, "--out", out / f"policy-{name}")
        pm, _ = rlhfkit("metrics", "pm-divergence", "--policy", out / f"policy-{name}", "--reward", out / "rm",
                        "--prompts", out / "test-prompts.jsonl", "--beta", 1.0, "--max-new-tokens", 24, "--top-p", 0.9,
                        "--plot", out / f"pm-{name}.png")
        gen, _ = rlhfkit("metrics", "generation", "--policy", out / f"policy-{name}", "--ref", a.policy,
                         "--prompts", out / "test-prompts.jsonl", "--max-new-tokens", 24, "--samples", 2)
        pm, gen = json.loads(pm), json.loads(gen)
        log = read_jsonl(out / f"policy-{name}" / "log.jsonl")
        result[name] = {"pm_divergence_mean": pm["mean"], "pm_divergence_median": pm["median"],
                        "train_reward_first": log[0]["reward_mean"], "train_reward_last": log[-1]["reward_mean"],
                        **{k: gen[k] for k in ("length", "perplexity", "entropy", "kl")}}
    pm_ref, _ = rlhfkit("metrics", "pm-divergence", "--policy", a.policy, "--reward", out / "rm", "--prompts",
                        out / "test-prompts.jsonl", "--beta", 1.0, "--max-new-tokens", 24, "--top-p", 0.9)
    result["reference_pm_divergence_mean"] = json.loads(pm_ref)["mean"]
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
