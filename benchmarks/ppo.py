"""Where a PPO iteration's time goes, and whether the loop adds hidden overhead.

Times a full ``PPOTrainer.step`` and, on the same prompts, each part alone: generation, the
reward, the policy (with value head) forward, the reference forward, and the update. Goal: a
whole iteration costs at most 1.3x the sum of its parts measured alone.

    python benchmarks/ppo.py [--policy smollm2-135m] [--batch-size 8] [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch


def length_reward(prompt: str, response: str) -> float:
    return min(len(response), 200) / 200


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default="smollm2-135m")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--mini-batch-size", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=3)
    args = ap.parse_args()

    from rlhfkit.ppo.policy import encode_prompts, forward_response, generate
    from rlhfkit.ppo.rewards import FunctionReward
    from rlhfkit.ppo.trainer import PPOConfig, PPOTrainer

    cfg = PPOConfig(policy=args.policy, reward=f"{__file__}:length_reward", out=tempfile.mkdtemp(),
                    batch_size=args.batch_size, mini_batch_size=args.mini_batch_size, max_new_tokens=args.max_new_tokens,
                    ppo_epochs=1, lr=1e-6)
    trainer = PPOTrainer(cfg, FunctionReward(cfg.reward))
    prompts = [f"Write a sentence about the number {i}." for i in range(args.batch_size)]
    trainer.step(prompts)  # warm-up

    def timed(fn):
        start = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start, result

    rows = []
    for _ in range(args.iterations):
        state = torch.get_rng_state()
        whole, (_, batch) = timed(lambda: trainer.step(prompts))
        torch.set_rng_state(state)  # the parts see the same sampling
        tok, dev = trainer.tokenizer, trainer.device
        ids, mask = encode_prompts(tok, prompts, cfg.max_prompt_length, dev)
        t_gen, (resp, rmask) = timed(lambda: generate(trainer.policy, tok, ids, mask, cfg.max_new_tokens, cfg.temperature, cfg.top_p))
        texts = tok.batch_decode(resp, skip_special_tokens=True)
        t_rew, _ = timed(lambda: trainer.reward(prompts, texts))
        with torch.no_grad():
            t_pol, _ = timed(lambda: trainer.values(ids, mask, resp, rmask, grad=False))
            t_ref, _ = timed(lambda: forward_response(trainer.ref, ids, mask, resp, rmask, cfg.temperature))
        t_upd, _ = timed(lambda: trainer.update(batch))
        parts = t_gen + t_rew + t_pol + t_ref + t_upd
        rows.append({"iteration": whole, "generate": t_gen, "reward": t_rew, "policy_value_forward": t_pol,
                     "ref_forward": t_ref, "update": t_upd, "sum_of_parts": parts, "ratio": whole / parts})
    best = min(rows, key=lambda r: r["iteration"])
    print(json.dumps({"policy": args.policy, "device": trainer.device, "batch_size": args.batch_size,
                      "max_new_tokens": args.max_new_tokens, "ppo_epochs": 1,
                      **{k: round(v, 4) for k, v in best.items()},
                      "ratio_all_iterations": [round(r["ratio"], 3) for r in rows]}, indent=1))


if __name__ == "__main__":
    main()
