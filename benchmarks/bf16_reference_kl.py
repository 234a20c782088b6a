"""The KL a bf16 reference shows before any update: PPO in `--dtype bf16` keeps the frozen reference
as a bf16 copy while the policy computes from fp32 masters under autocast, so the logged KL at
initialisation measures that rounding alone (it would be 0 in fp32). Tiny models, CPU, seconds.

    python benchmarks/bf16_reference_kl.py [--policies tiny-gpt tiny-llama] [--tokens 8 32 128]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REWARD = f"{Path(__file__).resolve().parents[1] / 'tests' / 'scripted_rewards.py'}:byte_mix"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policies", nargs="+", default=["tiny-gpt", "tiny-llama"])
    ap.add_argument("--tokens", nargs="+", type=int, default=[8, 32, 128])
    ap.add_argument("--rows", type=int, default=8)
    a = ap.parse_args()

    import tempfile

    from rlhfkit.ppo.rewards import FunctionReward
    from rlhfkit.ppo.trainer import PPOConfig, PPOTrainer

    for policy in a.policies:
        for tokens in a.tokens:
            cfg = PPOConfig(policy=policy, reward=REWARD, out=tempfile.mkdtemp(), batch_size=a.rows,
                            mini_batch_size=a.rows, max_new_tokens=tokens, dtype="bf16", seed=0)
            trainer = PPOTrainer(cfg, FunctionReward(cfg.reward))
            batch = trainer.rollout([f"prompt {i}" for i in range(a.rows)], list(range(a.rows)))
            print(json.dumps({"policy": policy, "new_tokens": tokens,
                              "mean_response_tokens": round(float(batch["mask"].sum()) / a.rows, 1),
                              "kl_per_sequence_at_init": round(batch["stats"]["kl"], 6)}), flush=True)


if __name__ == "__main__":
    main()
