"""Preference strength on real HH-RLHF pairs (../shared/data, harmless-base test, 2,312 pairs).

A random 20% of the labels are flipped here (seeded); `strength` trains the default ensemble
(minilm, K = 10 frozen-backbone heads) on the data itself, as the paper does, and scores it.
Reports the AUROC of −strength_mean for finding our flips, and the fraction of the *original*
(unflipped) pairs whose mean is below 0 (the paper saw ~25% on HH-RLHF train).

With --two-stage, a minilm reward model is first fine-tuned on the (noisy) pairs and the heads
sit on its backbone (`strength --from-rm`), the Uncertainty-aware RLHF recipe; on a CPU that
takes tens of minutes, on a GPU a few.

    python benchmarks/hh_strength.py [--max-length 512] [--two-stage] [--out bench-out/hh_strength]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--noise", type=float, default=0.2)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--max-length", default="512")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--two-stage", action="store_true")
    ap.add_argument("--out", default="bench-out/hh_strength")
    a = ap.parse_args()
    data = Path(a.data)
    if not data.exists():
        sys.exit(f"{data} not found: this benchmark needs the project's shared data beside the checkout")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with gzip.open(data, "rt") as fh:
        rows = [json.loads(line) for line in fh]
    rng = random.Random(a.seed)
    flipped = set(rng.sample(range(len(rows)), round(a.noise * len(rows))))
    records = []
    for i, r in enumerate(rows):
        c, j = (r["rejected"], r["chosen"]) if i in flipped else (r["chosen"], r["rejected"])
        if c == j:
            continue  # identical transcripts carry no preference (the contract rejects them)
        records.append({"id": f"hh-harmless-test-{i}", "chosen": c, "rejected": j, "noisy": i in flipped})
    (out / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    extra = []
    if a.two_stage:
        subprocess.run([sys.executable, "-m", "rlhfkit", "train-rm", str(out / "pairs.jsonl"), "--model", a.model,
                        "--out", str(out / "rm"), "--lr", "5e-5", "--batch-size", "16", "--epochs", "1",
                        "--warmup-ratio", "0.1", "--max-length", a.max_length, "--save-steps", "0", "--seed", str(a.seed)],
                       capture_output=True, text=True, check=True)
        extra = ["--from-rm", str(out / "rm")]
    p = subprocess.run([sys.executable, "-m", "rlhfkit", "strength", str(out / "pairs.jsonl"), "--model", a.model, *extra,
                        "--max-length", a.max_length, "--seed", str(a.seed), "--out", str(out / "strength.jsonl"),
                        "--plot", str(out / "strength.png")], capture_output=True, text=True, check=True)
    s = json.loads(p.stderr.strip().splitlines()[-1])
    scored = [json.loads(line) for line in (out / "strength.jsonl").read_text().splitlines()]
    original = [r for r in scored if not r["noisy"]]
    result = {"pairs": len(scored), "flipped_by_us": sum(r["noisy"] for r in scored), "model": a.model,
              "ensemble": "two-stage (heads on a fine-tuned RM)" if a.two_stage else "one-stage (heads on frozen backbone)",
              "max_length": int(a.max_length), "noisy_auroc": s["noisy_auroc"],
              "fraction_original_mean_below_0": sum(r["strength_mean"] < 0 for r in original) / len(original),
              "fraction_all_mean_below_0": s["fraction_mean_below_0"]}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
