"""PM RLHF at CPU scale: KL-RLHF vs conditional preference matching (cpm) PPO, run until the policies move.

A minilm reward model is trained on 600 synth film-review pairs; SmolLM2-135M-Instruct is tuned
against it with PPO, several seeds per arm: β = 1 (the theory's case) with the KL regulariser, or
cpm with α = 0.3. Every --eval-every steps each run's PM divergence (β = 1, 2 samples per prompt)
is measured on held-out prompts; the reward and KL come from the training log. The paper's claim:
cpm lowers the PM divergence (1.16 → 0.68 for OPT-1.3B, 2.23 → 1.57 for Llama-2-7B).

Reported per arm at the last step: the mean PM divergence over seeds and prompts with a 95%
bootstrap interval (seeds and prompts resampled), the cpm − KL difference with its interval, and
synth's gold reward of one response per held-out prompt (an independent judge of what PPO gained).
Everything is written under --out as it goes and the script resumes where it stopped (each PPO run
continues from its last checkpoint), so it can be run in the background and grown with --steps.

    python benchmarks/repro_pm_rlhf.py [--steps 32] [--eval-every 16] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import json
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

PAPER = {"kl": 1.16, "cpm": 0.68}  # OPT-1.3B, PM RLHF Table 2


def pm_values(out: Path, policy, rm: Path, prompts: Path, samples: int, max_new_tokens: int) -> list[float]:
    text, _ = rlhfkit("metrics", "pm-divergence", "--policy", policy, "--reward", rm, "--prompts", prompts,
                      "--beta", 1.0, "--samples", samples, "--max-new-tokens", max_new_tokens, "--top-p", 0.9,
                      "--seed", 1234)
    return json.loads(text)["values"]


def gold_rewards(policy, prompts: Path, gens: Path, max_new_tokens: int) -> list[float]:
    """synth's transparent gold reward (the lexicon that generated the pairs) of one sampled response
    per held-out prompt: an independent check that the reward model's gains are real gains."""
    from rlhfkit.synth import gold_reward

    rlhfkit("generate", prompts, "--policy", policy, "--max-new-tokens", max_new_tokens, "--top-p", 0.9,
            "--seed", 1234, "--out", gens)
    return [gold_reward(g["response"]) for g in read_jsonl(gens)]


def summarise(result: dict, arms: list[str], seeds: list[int]) -> dict:
    """Mean PM divergence per arm at the last step all its seeds reached, with 95% bootstrap intervals."""
    ref = result["reference"]["pm_values"]
    summary = {"reference": {"mean": statistics.fmean(ref), "gold_reward": statistics.fmean(result["reference"]["gold_rewards"])
                             if "gold_rewards" in result["reference"] else None,
                             "ci95": bootstrap_interval(lambda _, p: statistics.fmean(ref[i] for i in p), 1, len(ref))}}
    finals = {}
    for arm in arms:
        runs = [result["runs"].get(f"{arm}-s{s}", {}) for s in seeds]
        step = last_common_eval(runs)
        if step is None:
            continue
        values = [r["evals"][step]["pm_values"] for r in runs]
        finals[arm] = values

        def mean_of(runs_idx, prompts_idx, values=values):
            return statistics.fmean(values[r][p] for r in runs_idx for p in prompts_idx)

        summary[arm] = {"step": int(step), "mean": mean_of(range(len(values)), range(len(values[0]))),
                        "ci95": bootstrap_interval(mean_of, len(values), len(values[0])),
                        "per_seed": [statistics.fmean(v) for v in values],
                        "gold_reward": [statistics.fmean(r["final"]["gold_rewards"]) for r in runs
                                        if "gold_rewards" in r.get("final", {})],
                        "kl_to_reference": [r["final"]["kl"] for r in runs if "final" in r],
                        "train_reward_last": [r["final"]["train_reward_last"] for r in runs if "final" in r]}
    if "kl" in finals and "cpm" in finals and len(finals["kl"]) == len(finals["cpm"]):
        a, b = finals["cpm"], finals["kl"]

        def diff(runs_idx, prompts_idx):
            return (statistics.fmean(a[r][p] for r in runs_idx for p in prompts_idx)
                    - statistics.fmean(b[r][p] for r in runs_idx for p in prompts_idx))

        summary["cpm_minus_kl"] = {"mean": diff(range(len(a)), range(len(a[0]))),
                                   "ci95": bootstrap_interval(diff, len(a), len(a[0]))}
    return summary


def plot(result: dict, arms: list[str], seeds: list[int], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    colours = {"kl": "tab:blue", "cpm": "tab:orange"}
    labels = {"kl": "KL-RLHF", "cpm": "cpm (alpha = 0.3)"}
    runs = {labels[arm]: [result["runs"][f"{arm}-s{s}"] for s in seeds if f"{arm}-s{s}" in result["runs"]] for arm in arms}
    plot_runs(axes, runs, {labels[a]: c for a, c in colours.items()}, lambda e: statistics.fmean(e["pm_values"]), statistics.fmean(result["reference"]["pm_values"]))
    for arm, value in PAPER.items():
        axes[2].axhline(value, color=colours[arm], ls="--", lw=1, label=f"paper, {labels[arm].split(' ')[0]} (OPT-1.3B)")
    axes[0].set(title="Training reward (reward model)", xlabel="PPO step", ylabel="mean reward per batch")
    axes[1].set(title="KL to the reference (training batches)", xlabel="PPO step", ylabel="nats per response")
    axes[2].set(title="PM divergence, held-out prompts", xlabel="PPO step", ylabel="mean KL(p_llm || p_reward), nats")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle("PM RLHF at CPU scale: SmolLM2-135M, beta = 1, one line per seed")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default="smollm2-135m")
    ap.add_argument("--rm-model", default="minilm")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--eval-every", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--arms", nargs="+", default=["kl", "cpm"], choices=["kl", "cpm"])
    ap.add_argument("--prompts", type=int, default=64, help="held-out prompts for the PM divergence")
    ap.add_argument("--samples", type=int, default=2, help="responses per held-out prompt (the paper: 2)")
    ap.add_argument("--lr", default="1e-5")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--out", default="bench-out/repro_pm_rlhf_long")
    ap.add_argument("--result", default=str(Path(__file__).with_name("results") / "repro_pm_rlhf_long_cpu.json"))
    a = ap.parse_args()
    out, result_path = Path(a.out), Path(a.result)
    out.mkdir(parents=True, exist_ok=True)
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    result.update({"policy": a.policy, "beta": 1.0, "alpha": 0.3, "lr": a.lr, "batch_size": a.batch_size,
                   "max_new_tokens": a.max_new_tokens, "held_out_prompts": a.prompts, "samples": a.samples,
                   "command": "python benchmarks/repro_pm_rlhf.py " + " ".join(
                       f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                       for k, v in vars(a).items() if k not in ("out", "result"))})
    result.setdefault("runs", {})
    if not (out / "pairs.jsonl").exists():
        rlhfkit("synth", "--n", 600, "--seed", 0, "--out", out / "pairs.jsonl")
        rlhfkit("synth", "--n", 400, "--seed", 7, "--out", out / "test.jsonl")
    if not (out / "rm" / "rlhfkit.json").exists():
        rlhfkit("train-rm", out / "pairs.jsonl", "--model", a.rm_model, "--out", out / "rm", "--lr", "5e-5",
                "--batch-size", 16, "--warmup-ratio", 0.1, "--save-steps", 0)
    rm = out / "rm"
    write_jsonl(out / "train-prompts.jsonl", [{"prompt": r["prompt"]} for r in read_jsonl(out / "pairs.jsonl")[:256]])
    test_prompts = out / "test-prompts.jsonl"
    write_jsonl(test_prompts, [{"prompt": r["prompt"]} for r in read_jsonl(out / "test.jsonl")[: a.prompts]])
    if "reference" not in result:
        result["reference"] = {"pm_values": pm_values(out, a.policy, rm, test_prompts, a.samples, a.max_new_tokens)}
        save_json(result_path, result)
    if "gold_rewards" not in result["reference"]:
        result["reference"]["gold_rewards"] = gold_rewards(a.policy, test_prompts, out / "gens-reference.jsonl",
                                                           a.max_new_tokens)
        save_json(result_path, result)
    ppo = ["--policy", a.policy, "--reward", rm, "--prompts", out / "train-prompts.jsonl", "--batch-size", a.batch_size,
           "--mini-batch-size", a.batch_size // 2, "--ppo-epochs", 2, "--max-new-tokens", a.max_new_tokens, "--lr", a.lr,
           "--beta", 1.0, "--top-p", 0.9, "--temperature", 1.0, "--sample-steps", 0]
    flags = {"kl": ["--regularizer", "kl"], "cpm": ["--regularizer", "cpm", "--alpha", 0.3]}
    for seed in a.seeds:
        for arm in a.arms:
            name = f"{arm}-s{seed}"
            run = result["runs"].setdefault(name, {"evals": {}, "seconds": 0.0})
            run_dir = out / name
            train_and_evaluate(run, run_dir, a.steps, a.eval_every, [*ppo, *flags[arm], "--seed", seed],
                               lambda d: {"pm_values": pm_values(out, d, rm, test_prompts, a.samples, a.max_new_tokens)},
                               lambda: save_json(result_path, result))
            if "final" not in run and str(a.steps) in run["evals"]:
                text, _ = rlhfkit("metrics", "generation", "--policy", run_dir, "--ref", a.policy, "--prompts", test_prompts,
                                  "--max-new-tokens", a.max_new_tokens, "--top-p", 0.9, "--seed", 1234)
                gen = json.loads(text)
                run["final"] = {"step": a.steps, "train_reward_last": run["log"][-1]["reward_mean"],
                                **{k: gen[k] for k in ("kl", "perplexity", "entropy", "length")}}
                save_json(result_path, result)
            if "final" in run and "gold_rewards" not in run["final"]:
                run["final"]["gold_rewards"] = gold_rewards(run_dir, test_prompts, out / f"gens-{name}.jsonl",
                                                            a.max_new_tokens)
                save_json(result_path, result)
    result["summary"] = summarise(result, a.arms, a.seeds)
    save_json(result_path, result)
    plot(result, a.arms, a.seeds, result_path.with_suffix(".png"))
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
