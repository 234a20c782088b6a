"""Noise detection and cleaning on synth data (Secrets II §2 on data whose truth is known).

1. synth pairs with 20% flipped labels; `rlhfkit strength` trained on the data itself (K = 10
   heads) → AUROC of −strength_mean for the flipped pairs. Two ensembles: heads on the frozen
   minilm ("one-stage", the default), and heads on a minilm reward model first fine-tuned on the
   noisy data ("two-stage", `--from-rm`, the Uncertainty-aware RLHF recipe).
2. `rlhfkit clean --flip` → precision / recall of the flips.
3. `rlhfkit train-rm` on the noisy data and on each cleaned set → accuracy on clean held-out pairs.

    python benchmarks/noise_synth.py [--n 1000] [--model minilm] [--out bench-out/noise_synth]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _run import rlhfkit


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=0.2)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--epochs", default="2")
    ap.add_argument("--out", default="bench-out/noise_synth")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rlhfkit("synth", "--n", str(a.n), "--noise", str(a.noise), "--seed", "0", "--out", str(out / "noisy.jsonl"))
    rlhfkit("synth", "--n", "500", "--noise", "0", "--seed", "99", "--out", str(out / "heldout.jsonl"))

    def train(name: str) -> float:
        _, tr = rlhfkit("train-rm", str(out / f"{name}.jsonl"), "--model", a.model, "--out", str(out / f"rm-{name}"),
                        "--lr", "5e-5", "--batch-size", "16", "--epochs", a.epochs, "--warmup-ratio", "0.1",
                        "--save-steps", "0", "--eval", str(out / "heldout.jsonl"), "--seed", "0")
        return tr["eval_accuracy"]

    result: dict = {"n": a.n, "noise": a.noise, "model": a.model, "heldout_accuracy": {"noisy": train("noisy")}}
    for variant, extra in (("one-stage", []), ("two-stage", ["--from-rm", str(out / "rm-noisy")])):
        _, st = rlhfkit("strength", str(out / "noisy.jsonl"), "--model", a.model, *extra,
                        "--out", str(out / f"strength-{variant}.jsonl"), "--plot", str(out / f"strength-{variant}.png"))
        _, cl = rlhfkit("clean", str(out / f"strength-{variant}.jsonl"), "--flip", "--out", str(out / f"flipped-{variant}.jsonl"))
        result[variant] = {"noisy_auroc": st["noisy_auroc"], "fraction_mean_below_0": round(st["fraction_mean_below_0"], 4),
                           "flip_precision": round(cl["flip_quality"]["precision"], 4),
                           "flip_recall": round(cl["flip_quality"]["recall"], 4)}
        result["heldout_accuracy"][f"flipped-{variant}"] = train(f"flipped-{variant}")
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
