"""PPO iteration time and memory, split into its phases, for full fine-tuning and LoRA.

For each mode (full, lora) it builds the trainer, runs one warm-up iteration, then times
``--iterations`` iterations with the trainer's own phase timings (generate, reward, policy and value
forward, reference forward, update) and reports the best one, the peak memory (GPU: max allocated;
CPU: peak resident set of the process, taken after each mode, so the LoRA number includes the
full run's high-water mark when both run in one process: run `--modes lora` alone to see its own),
the trainable parameters, and the cost of per-row seeded sampling against plain HF sampling on
the same prompts (the price of rollouts that do not depend on the process count).

    python benchmarks/ppo.py [--policy smollm2-135m] [--modes full lora] [--batch-size 8] [--max-new-tokens 32]
    python benchmarks/ppo.py --policy DIR_OF_A_CONFIG_BUILT_MODEL --dtype bf16 ...   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time

import torch


def length_reward(prompt: str, response: str) -> float:
    return min(len(response), 200) / 200


def best_of_steps(trainer, prompts: list[str], iterations: int) -> dict:
    """One warm-up PPO iteration, then ``iterations`` timed ones; the fastest, with the trainer's own
    phase timings (generate, reward, forwards, update) beside its total ("iteration", seconds)."""
    trainer.step(prompts, 1)
    rows = []
    for it in range(iterations):
        timings: dict = {}
        start = time.perf_counter()
        trainer.step(prompts, 2 + it, timings)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        rows.append({"iteration": time.perf_counter() - start, **timings})
    return min(rows, key=lambda r: r["iteration"])


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default="smollm2-135m")
    ap.add_argument("--modes", nargs="+", default=["full", "lora"], choices=["full", "lora"])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--mini-batch-size", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()

    from rlhfkit.ppo.policy import encode_prompts, generate
    from rlhfkit.ppo.rewards import FunctionReward
    from rlhfkit.ppo.trainer import PPOConfig, PPOTrainer

    prompts = [f"Write a sentence about the number {i}." for i in range(args.batch_size)]
    report = {"policy": args.policy, "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
              "device": "cuda" if torch.cuda.is_available() else "cpu", "modes": {}}
    for mode in args.modes:
        cfg = PPOConfig(policy=args.policy, reward=f"{__file__}:length_reward", out=tempfile.mkdtemp(),
                        batch_size=args.batch_size, mini_batch_size=args.mini_batch_size,
                        max_new_tokens=args.max_new_tokens, ppo_epochs=1, lr=1e-6, dtype=args.dtype,
                        lora=mode == "lora")
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        trainer = PPOTrainer(cfg, FunctionReward(cfg.reward))
        best = best_of_steps(trainer, prompts, args.iterations)
        ids, mask = encode_prompts(trainer.tokenizer, prompts, cfg.max_prompt_length, trainer.device)
        sampling = {}
        for name, seeds in (("plain", None), ("per_row", list(range(len(prompts))))):
            t0 = time.perf_counter()
            with trainer.autocast():
                generate(trainer.policy, trainer.tokenizer, ids, mask, cfg.max_new_tokens, 1.0, 1.0, row_seeds=seeds)
            sampling[name] = time.perf_counter() - t0
        trainable = sum(p.numel() for p in trainer.actor.parameters() if p.requires_grad)
        report["modes"][mode] = {
            **{k: round(v, 4) for k, v in best.items()},
            "phases_share": {k: round(v / best["iteration"], 3) for k, v in best.items() if k != "iteration"},
            "peak_memory_mb": round(peak_memory_mb(), 1), "trainable_parameters": trainable,
            "generate_plain_s": round(sampling["plain"], 4), "generate_per_row_s": round(sampling["per_row"], 4),
            "per_row_sampling_overhead": round(sampling["per_row"] / sampling["plain"], 3),
        }
        del trainer
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
