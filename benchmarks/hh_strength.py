"""Preference strength on real HH-RLHF pairs (../shared/data, harmless-base test, 2,312 pairs).

A random 20% of the labels are flipped here (seeded). `strength` then scores every pair:
  new        the default: cross-fitted minilm reward models (3 folds, 3 epochs each; --folds 5
             --member-epochs 1 is the previous default)
  old        the previous default: K = 10 heads on frozen minilm trained on the data itself (--in-sample)
  two-stage  heads on a minilm reward model fine-tuned on the (noisy) pairs (--in-sample --from-rm)
Reports the AUROC of −strength_mean for finding our flips, the precision and recall of the default
`clean --flip` against them, the fraction of the *original* (unflipped) pairs it flips (which
cannot all be wrong labels) and the fraction of original pairs with mean < 0 (the paper saw ~25% on
HH-RLHF train).

Why the AUROC is what it is: let o be each pair's mean margin measured against its *original* (human)
label (o = −mean on the pairs we flipped). Since our flips are random, the AUROC of −mean for them is
P(o_a + o_b > 0) for a flipped pair a and an unflipped pair b: a property of how well the members
order HH's own labels, nothing else. The result reports the members' agreement with the human labels
(P(o > 0)), that AUROC computed from o over all pairs, and the agreement that Gaussian margins would
need for an AUROC of 0.70 (Φ(Φ⁻¹(0.70)/√2)), so a stronger --model can be judged by one number.

    python benchmarks/hh_strength.py [--construction new|old|two-stage] [--limit 1000] [--max-length 256] [--folds 5] [--member-epochs 1]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import subprocess
import sys
from pathlib import Path
from statistics import NormalDist

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"


def auroc_for_random_flips(versus_human: list[float]) -> float:
    """P(o_a + o_b > 0) over pairs of pairs: the AUROC of −mean that members with these margins (against
    the human labels) give for flips drawn at random, whichever pairs are drawn."""
    from rlhfkit.cleaning.strength import auroc

    return round(auroc(versus_human + [-o for o in versus_human], [True] * len(versus_human) + [False] * len(versus_human)), 4)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--noise", type=float, default=0.2)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--max-length", default="256")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--construction", choices=["new", "old", "two-stage"], default="new")
    ap.add_argument("--two-stage", action="store_true", help="same as --construction two-stage")
    ap.add_argument("--limit", type=int, default=None, help="a random sample of N pairs (the time budget names 1,000)")
    ap.add_argument("--member-epochs", default=None, help="strength --member-epochs (new construction; default: strength's)")
    ap.add_argument("--folds", default=None, help="strength --folds (new construction; default: strength's)")
    ap.add_argument("--out", default="bench-out/hh_strength")
    ap.add_argument("--reuse-strength", action="store_true",
                    help="keep --out's strength file and its recorded summary; rerun only `clean` (after a change to it)")
    a = ap.parse_args()
    if a.two_stage:
        a.construction = "two-stage"
    data = Path(a.data)
    if not data.exists():
        sys.exit(f"{data} not found: this benchmark needs the project's shared data beside the checkout")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with gzip.open(data, "rt") as fh:
        rows = [json.loads(line) for line in fh]
    rng = random.Random(a.seed)
    if a.limit:
        rows = [rows[i] for i in sorted(rng.sample(range(len(rows)), min(a.limit, len(rows))))]
    flipped = set(rng.sample(range(len(rows)), round(a.noise * len(rows))))
    records = []
    for i, r in enumerate(rows):
        c, j = (r["rejected"], r["chosen"]) if i in flipped else (r["chosen"], r["rejected"])
        if c == j:
            continue  # identical transcripts carry no preference (the contract rejects them)
        records.append({"id": f"hh-harmless-test-{i}", "chosen": c, "rejected": j, "noisy": i in flipped})
    (out / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    extra = {"new": [], "old": ["--in-sample"], "two-stage": []}[a.construction]
    if a.construction == "two-stage":
        subprocess.run([sys.executable, "-m", "rlhfkit", "train-rm", str(out / "pairs.jsonl"), "--model", a.model,
                        "--out", str(out / "rm"), "--lr", "5e-5", "--batch-size", "16", "--epochs", "1",
                        "--warmup-ratio", "0.1", "--max-length", a.max_length, "--save-steps", "0", "--seed", str(a.seed)],
                       capture_output=True, text=True, check=True)
        extra = ["--in-sample", "--from-rm", str(out / "rm")]
    if a.construction == "new":
        extra = (["--member-epochs", a.member_epochs] if a.member_epochs else []) + (["--folds", a.folds] if a.folds else [])
    tag = f"{a.construction}-n{a.limit}" if a.limit else a.construction
    tag += f"-ep{a.member_epochs}" if a.member_epochs else ""
    tag += f"-f{a.folds}" if a.folds else ""
    strength_path = out / f"strength-{tag}.jsonl"
    previous = out / f"result-{tag}.json"
    if a.reuse_strength and strength_path.exists() and previous.exists():
        before = json.loads(previous.read_text())
        s = {"noisy_auroc": before["noisy_auroc"], "seconds": before["seconds"],
             "noise_rate_estimate": before["noise_rate_estimate"], "fraction_mean_below_0": before["fraction_all_mean_below_0"]}
    else:
        p = subprocess.run([sys.executable, "-m", "rlhfkit", "strength", str(out / "pairs.jsonl"), "--model", a.model,
                            *extra, "--max-length", a.max_length, "--seed", str(a.seed), "--out", str(strength_path),
                            "--plot", str(out / f"strength-{tag}.png")], capture_output=True, text=True, check=True)
        s = json.loads(p.stderr.strip().splitlines()[-1])
    c = subprocess.run([sys.executable, "-m", "rlhfkit", "clean", str(strength_path), "--flip", "--out",
                        str(out / f"clean-{tag}.jsonl")], capture_output=True, text=True, check=True)
    cl = json.loads(c.stderr.strip().splitlines()[-1])
    cleaned = [json.loads(line) for line in (out / f"clean-{tag}.jsonl").read_text().splitlines()]
    scored = [json.loads(line) for line in strength_path.read_text().splitlines()]
    original = [r for r in scored if not r["noisy"]]
    versus_human = [-r["strength_mean"] if r["noisy"] else r["strength_mean"] for r in scored]
    result = {"command": "python benchmarks/hh_strength.py " + " ".join(sys.argv[1:]), "pairs": len(scored), "flipped_by_us": sum(r["noisy"] for r in scored), "model": a.model,
              "construction": a.construction, "member_epochs": a.member_epochs, "folds": a.folds, "max_length": int(a.max_length), "noisy_auroc": s["noisy_auroc"],
              "seconds": s.get("seconds"), "noise_rate_estimate": s.get("noise_rate_estimate"),
              "default_flip_precision": cl["flip_quality"]["precision"], "default_flip_recall": cl["flip_quality"]["recall"],
              "default_flips": cl["flip_quality"]["flipped"], "clean_undecided": cl.get("undecided"),
              "fraction_original_flipped": sum(r["clean_action"] == "flip" for r in cleaned if not r["noisy"]) / len(original),
              "fraction_original_mean_below_0": sum(r["strength_mean"] < 0 for r in original) / len(original),
              "fraction_all_mean_below_0": s["fraction_mean_below_0"],
              "members_agree_with_human_label": sum(o > 0 for o in versus_human) / len(versus_human),
              "auroc_for_random_flips": auroc_for_random_flips(versus_human),
              "agreement_for_auroc_0.70_if_gaussian": round(NormalDist().cdf(NormalDist().inv_cdf(0.70) / 2 ** 0.5), 4)}
    (out / f"result-{tag}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
