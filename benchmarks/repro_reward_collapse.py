"""Reward Collapse at small scale: ranking reward models on prefix rankings of real long answers.

Prefix rankings (the paper's construction: 8 prefixes of each answer of 100+ words, longer
preferred; open-ended prompts use 10..80 words, closed-ended ones 16-34 and 56-74) are built from
the best sample of each AlpacaEval instruction in ../shared/data. A minilm ranking reward model is
trained with each utility (x, log, x_inv, logsigmoid) and the prompt-aware adaptive one; held-out
prompts' σ-rewards are compared between the open- and closed-ended groups (1-Wasserstein, KS).
The paper's claim: one prompt-agnostic utility gives both groups the same reward distribution;
the prompt-aware utility keeps them apart.

    python benchmarks/repro_reward_collapse.py [--steps 300] [--out bench-out/repro_reward_collapse]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _run import read_jsonl, rlhfkit, write_jsonl

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpacaeval-tulu2dpo13b-ranked11.jsonl.gz"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", default="bench-out/repro_reward_collapse")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rlhfkit("prompts", a.data, "--kind", "prefix-rankings", "--min-words", 100, "--out", out / "all.jsonl")
    rows = read_jsonl(out / "all.jsonl")
    cut = int(0.8 * len(rows))
    write_jsonl(out / "train.jsonl", rows[:cut])
    write_jsonl(out / "test.jsonl", rows[cut:])
    result: dict = {"prompts_train": cut, "prompts_test": len(rows) - cut, "model": a.model, "steps": a.steps, "utilities": {}}
    for utility in ("x", "log", "x_inv", "logsigmoid", "adaptive"):
        rlhfkit("train-rm", out / "train.jsonl", "--loss", "ranking", "--utility", utility, "--model", a.model,
                "--max-steps", a.steps, "--batch-size", 2, "--grad-accum", 4, "--lr", "2e-5", "--warmup-ratio", 0.1,
                "--max-length", 256, "--max-pairs", 28, "--save-steps", 0, "--out", out / f"rm-{utility}")
        dist, _ = rlhfkit("metrics", "reward-dist", out / "test.jsonl", "--reward", out / f"rm-{utility}",
                          "--group-field", "open_ended", "--plot", out / f"reward-dist-{utility}.png")
        d = json.loads(dist)
        result["utilities"][utility] = {
            "wasserstein": d["distance"]["wasserstein"], "ks": d["distance"]["ks"],
            "std_open": d["groups"]["True"]["std"], "std_closed": d["groups"]["False"]["std"],
            "mean_by_rank_open": [round(x, 3) for x in d["groups"]["True"]["mean_by_rank"]],
            "mean_by_rank_closed": [round(x, 3) for x in d["groups"]["False"]["mean_by_rank"]],
        }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
