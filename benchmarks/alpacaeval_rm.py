"""A reward model trained by `train-rm` on AlpacaEval GPT-4 preferences, then used as a judge.

The 805 AlpacaEval annotations (text-davinci-003 vs alpaca-7b, GPT-4 preference; 16 without a
preference are left out) become pairs {prompt, chosen, rejected}. Half of them (seeded split)
train a minilm reward model; on the other half we report `metrics accuracy` (per `dataset`
subset) and the reward-model judge (`judge --reward`) over each generator's outputs, next to
GPT-4's own win rate for text-davinci-003 on the same prompts.

    python benchmarks/alpacaeval_rm.py [--model minilm] [--out bench-out/alpacaeval_rm]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from _run import rlhfkit, write_jsonl as write

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpacaeval-alpaca7b-gpt4-annotations.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--epochs", default="2")
    ap.add_argument("--max-length", default="256")
    ap.add_argument("--out", default="bench-out/alpacaeval_rm")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in json.loads(Path(a.data).read_text()) if r["preference"] in (1, 2) and r["output_1"] != r["output_2"]]
    random.Random(0).shuffle(rows)
    half = len(rows) // 2
    pairs = [{"id": f"alpacaeval-{i}", "prompt": r["instruction"], "subset": r["dataset"],
              "chosen": r["output_1"] if r["preference"] == 1 else r["output_2"],
              "rejected": r["output_2"] if r["preference"] == 1 else r["output_1"]} for i, r in enumerate(rows)]
    write(out / "train.jsonl", pairs[:half])
    write(out / "test.jsonl", pairs[half:])
    test_rows = rows[half:]
    write(out / "davinci003.jsonl", [{"id": f"t{i}", "prompt": r["instruction"], "response": r["output_1"]} for i, r in enumerate(test_rows)])
    write(out / "alpaca7b.jsonl", [{"id": f"t{i}", "prompt": r["instruction"], "response": r["output_2"]} for i, r in enumerate(test_rows)])

    if (out / "rm" / "rlhfkit.json").exists():  # already trained by an earlier run of this script
        tr = {"steps": json.loads((out / "rm" / "rlhfkit.json").read_text())["config"].get("max_steps")}
    else:
        _, tr = rlhfkit("train-rm", str(out / "train.jsonl"), "--model", a.model, "--out", str(out / "rm"), "--lr", "3e-5",
                        "--batch-size", "16", "--epochs", a.epochs, "--warmup-ratio", "0.1", "--max-length", a.max_length,
                        "--save-steps", "0", "--seed", "0")
    acc, _ = rlhfkit("metrics", "accuracy", str(out / "test.jsonl"), "--reward", str(out / "rm"), "--subset-field", "subset")
    _, judged = rlhfkit("judge", str(out / "davinci003.jsonl"), str(out / "alpaca7b.jsonl"), "--reward", str(out / "rm"),
                        "--out", str(out / "judged.jsonl"))
    scores = [json.loads(line) for line in (out / "judged.jsonl").read_text().splitlines()]
    by_source: dict[str, list[float]] = {}
    for s in scores:
        by_source.setdefault(Path(s["source"]).stem, []).append(s["reward"])
    rm_prefers_davinci = sum(d > a_ for d, a_ in zip(by_source["davinci003"], by_source["alpaca7b"])) / len(test_rows)
    gpt4_prefers_davinci = sum(r["preference"] == 1 for r in test_rows) / len(test_rows)
    accuracy = json.loads(acc)
    result = {"train_pairs": half, "test_pairs": len(rows) - half, "model": a.model,
              "train_steps": tr.get("steps"), "heldout_accuracy_vs_gpt4": accuracy["overall"],
              "accuracy_by_subset": {k: round(v["accuracy"], 4) for k, v in accuracy["subsets"].items()},
              "reward_judge_mean": {k: round(v["mean"], 4) for k, v in ((Path(f).stem, s) for f, s in judged["files"].items())},
              "reward_judge_std": {k: round(v["std"], 4) for k, v in ((Path(f).stem, s) for f, s in judged["files"].items())},
              "rm_prefers_davinci003": round(rm_prefers_davinci, 4), "gpt4_prefers_davinci003": round(gpt4_prefers_davinci, 4)}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
