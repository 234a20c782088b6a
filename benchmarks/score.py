"""Scoring throughput: `rlhfkit score`'s scorer vs a naive padded HF forward loop, same model and data.

Data: real HH-RLHF transcripts from ../shared/data when present (their lengths vary a lot), else
synthetic reviews of mixed length. Both sides use torch.no_grad-style inference, the same batch
size and max length; the naive loop pads each batch to its longest text, in file order.

    python benchmarks/score.py [--model minilm] [--n 512] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import tempfile
import time
from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"


def texts(n: int, path: Path = SHARED) -> tuple[list[str], str]:
    if path.exists():
        with gzip.open(path, "rt") as fh:
            rows = [json.loads(line) for line in fh]
        return [r["chosen"] for r in rows[:n]], "hh-rlhf-harmless-base-test"
    from rlhfkit import synth

    rng = random.Random(0)
    return [" ".join(synth.review(rng)[0] for _ in range(rng.randint(1, 30))) for _ in range(n)], "synth (mixed length)"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="minilm")
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data", default=str(SHARED), help="HH-style .jsonl.gz ({chosen} transcripts)")
    args = p.parse_args()

    from rlhfkit.models import load_model, load_tokenizer
    from rlhfkit.cleaning.scoring import RewardModelScorer

    directory = tempfile.mkdtemp()
    load_model(args.model, "reward").save_pretrained(directory)
    load_tokenizer(args.model).save_pretrained(directory)
    scorer = RewardModelScorer(directory, max_length=args.max_length)
    tok, hf = scorer.tokenizer, scorer.model.hf
    data, source = texts(args.n, Path(args.data))
    device = scorer.device

    tok.truncation_side = "left"  # as rlhfkit does: keep the end of the response

    def naive() -> list[float]:
        out = []
        with torch.no_grad():
            for s in range(0, len(data), args.batch_size):
                enc = tok(data[s : s + args.batch_size], padding=True, truncation=True, max_length=args.max_length,
                          return_tensors="pt").to(device)
                out.extend(hf(**enc).logits[:, 0].tolist())
        return out

    def ours() -> list[float]:
        return scorer.score([""] * len(data), data, args.batch_size)[:, 0].tolist()

    a, b = naive(), ours()  # warm-up, and the two must agree
    tolerance = 1e-3 if next(hf.parameters()).dtype == torch.float32 else 0.1  # bf16 rounds differently per batch
    assert max(abs(x - y) for x, y in zip(a, b)) < tolerance, "scores differ"
    best = {"naive": float("inf"), "rlhfkit": float("inf")}
    for _ in range(args.repeats):
        for name, fn in (("naive", naive), ("rlhfkit", ours)):
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    print(json.dumps({"model": args.model, "data": source, "n": len(data), "batch_size": args.batch_size,
                      "naive_per_s": round(len(data) / best["naive"], 1), "rlhfkit_per_s": round(len(data) / best["rlhfkit"], 1),
                      "speedup": round(best["naive"] / best["rlhfkit"], 2), "device": str(device)}, indent=1))


if __name__ == "__main__":
    main()
