"""Noise detection and cleaning on synth data, judged by the reward model each cleaning produces.

For every noise level and seed: `synth --n N --noise P --seed S` (the same pairs at every noise
level, `--noise 0` being the gold-label oracle), strength by the new default (cross-fitted members)
and by the old one (`--in-sample` heads on frozen minilm), then cleaned training sets:

    noisy      the data as given
    gold       the oracle: the same pairs with their true labels
    old        old default: in-sample strength, flip every pair with mean < 0
    new        new default: cross-fitted strength | clean --flip (P(label wrong) >= 0.8, unanimous)
    cleanlab   cleanlab.filter.find_label_issues on the same out-of-sample probabilities, flagged pairs flipped
    drop       the new rule's pairs dropped instead of flipped (clean --drop-wrong)
    flip+drop  flip the confident ones, drop the uncertain ones (clean --flip --drop-uncertain 0.3)
    soft       flip the confident ones, soft labels from P(label wrong) on every pair (clean --flip --soft)
    flip+margin  flip the confident ones, margin 0.5 * max(strength, 0) on every pair (clean --flip --margin)
    robust     the new default's data, trained through the noise left: train-rm --noise-rate (clean's
               expected share of wrong labels left) --noise-loss unbiased (Provably Robust DPO)
    forward    the data as given, trained through all its noise: train-rm --noise-rate (strength's
               estimate) with the noisy-channel likelihood (--noise-loss forward)
    new+forward  the new default's data, train-rm --noise-rate (the rate clean expects is left), forward loss

Levers (other strength settings, each followed by clean --flip; --variants). The default members
are 3 folds x 3 epochs (members train on 2/3 of the pairs); the previous default was 5 folds x 1 epoch:

    folds5-1ep                 the previous default: 5 folds, members fine-tuned 1 epoch on 4/5 of the pairs
    members-2ep, -3ep, -5ep    5 folds, members fine-tuned 2, 3 or 5 epochs (-3ep: twice the default's training)
    rounds-2                   5 folds x 1 epoch, a second round on the first round's corrections
    members-lr1.5e-4           5 folds x 1 epoch at 3x the learning rate
    members-lr1e-4-b8          5 folds x 1 epoch at 2x the learning rate, batch 8 (twice the steps)
    folds2-4ep                 2 folds, members 4 epochs on half the pairs
    rounds-2-3ep               two rounds of 5 folds x 3 epochs (4x the default's member training)
    rounds-2-3ep-f0.15         the same strength, the lowest 15% flipped (clean --flip-fraction 0.15)
    members-2ep-p0.5           5 folds x 2 epochs, flip at P(label wrong) >= 0.5 (clean --confidence 0.5)
    members-2ep-p0.95          5 folds x 2 epochs, flip at P(label wrong) >= 0.95
    folds5-1ep-p0.9, -p0.95    the previous default's strength, flip at P(label wrong) >= 0.9 or 0.95
    new-p0.9, new-p0.95        the default strength, flip at P(label wrong) >= 0.9 or 0.95

Diagnoses (they read the gold labels; not methods): which wrong labels does the reward model mind?

    oracle-detected   put right exactly the wrong labels the new default flips (its false flips left out)
    oracle-random     put right as many wrong labels, drawn at random
    oracle-easy       put right every wrong label whose true score difference is >= 2

A minilm reward model (2 epochs, lr 5e-5, batch 16) is trained on each set and scored on 500 clean
held-out pairs (`synth --n 500 --noise 0 --seed 10000+S`). Reported per run: flip precision and
recall against the injected noise, AUROC of -strength_mean, the fraction of pairs flipped, the
noise-rate estimate, ECE of P(label wrong), strength time, and held-out accuracy of every set.
Runs already in --out are reused, so the grid can be grown a cell at a time.

    python benchmarks/noise_synth.py --noise 0 0.1 0.2 0.4 --seeds 0 1 2 [--n 1000] [--variants ...]
    python benchmarks/noise_synth.py --summary [--save results/noise_synth_grid_cpu.json]   # the table from what --out holds

--out defaults to bench-out/noise_synth_3f3e (cells of today's default). Cells measured while the
default was 5 folds x 1 epoch live in results/noise_synth_grid_5f1e_cpu.json (there `new` is that
default, and the derived sets flip+drop, soft, flip+margin, robust, forward, new+forward and the
oracle-* diagnoses were made from its strength).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from pathlib import Path

from _run import read_jsonl, rlhfkit, write_jsonl

# Stronger strength settings, each followed by `clean` (the levers measured against the default).
LEVERS = {"folds5-1ep": (["--folds", "5", "--member-epochs", "1"], ["--flip"]),  # the previous default
          "members-2ep": (["--folds", "5", "--member-epochs", "2"], ["--flip"]),
          "members-3ep": (["--folds", "5", "--member-epochs", "3"], ["--flip"]),
          "members-5ep": (["--folds", "5", "--member-epochs", "5"], ["--flip"]),
          "rounds-2": (["--folds", "5", "--member-epochs", "1", "--rounds", "2"], ["--flip"]),
          "members-lr1.5e-4": (["--folds", "5", "--member-epochs", "1", "--member-lr", "1.5e-4"], ["--flip"]),
          "members-lr1e-4-b8": (["--folds", "5", "--member-epochs", "1", "--member-lr", "1e-4", "--batch-size", "8"],
                                ["--flip"]),
          "folds2-4ep": (["--folds", "2", "--member-epochs", "4"], ["--flip"]),
          "rounds-2-3ep": (["--folds", "5", "--rounds", "2", "--member-epochs", "3"], ["--flip"]),
          "rounds-2-3ep-f0.15": (["--folds", "5", "--rounds", "2", "--member-epochs", "3"], ["--flip-fraction", "0.15"]),
          "members-2ep-p0.5": (["--folds", "5", "--member-epochs", "2"], ["--flip", "--confidence", "0.5"]),
          "members-2ep-p0.95": (["--folds", "5", "--member-epochs", "2"], ["--flip", "--confidence", "0.95"]),
          "folds5-1ep-p0.9": (["--folds", "5", "--member-epochs", "1"], ["--flip", "--confidence", "0.9"]),
          "folds5-1ep-p0.95": (["--folds", "5", "--member-epochs", "1"], ["--flip", "--confidence", "0.95"]),
          "new-p0.9": ([], ["--flip", "--confidence", "0.9"]),
          "new-p0.95": ([], ["--flip", "--confidence", "0.95"])}
# Diagnoses, not methods: they read the gold labels to ask which wrong labels matter to the reward model.
ORACLES = ("oracle-detected", "oracle-random", "oracle-easy")
# Training through the noise instead of (or after) cleaning: variant -> (training set, train-rm --noise-loss,
# where the rate comes from: strength's estimate for the data as given, or clean's expected rate left).
THROUGH = {"robust": ("new", "unbiased", "left"), "forward": ("noisy", "forward", "estimate"),
           "new+forward": ("new", "forward", "left")}
VARIANTS = ("noisy", "gold", "old", "new", "cleanlab", "drop", "flip+drop", "soft", "flip+margin", *THROUGH, *LEVERS, *ORACLES)
DEFAULT_VARIANTS = VARIANTS[:9]
CLEAN_FLAGS = {"new": ["--flip"], "drop": ["--drop-wrong"], "flip+drop": ["--flip", "--drop-uncertain", "0.3"],
               "soft": ["--flip", "--soft"], "flip+margin": ["--flip", "--margin"]}


def flipped_by_cleanlab(strength_rows: list[dict]) -> list[bool]:
    """cleanlab's confident learning on the out-of-sample probabilities: each pair is an example
    labelled with its given order, p = σ(strength_mean); its swapped twin carries the other label,
    so both 'classes' are present. Originals flagged as label issues are flipped."""
    import numpy as np
    from cleanlab.filter import find_label_issues

    m = np.array([r["strength_mean"] for r in strength_rows])
    p = 1 / (1 + np.exp(-m))
    labels = np.concatenate([np.ones(len(m), int), np.zeros(len(m), int)])
    probs = np.concatenate([np.stack([1 - p, p], 1), np.stack([p, 1 - p], 1)])
    issues = find_label_issues(labels, probs)
    return [bool(x) for x in issues[: len(m)]]


def flip(row: dict) -> dict:
    out = dict(row, chosen=row["rejected"], rejected=row["chosen"])
    out["gold_chosen"], out["gold_rejected"] = row["gold_rejected"], row["gold_chosen"]
    return out


def oracle_rows(kind: str, noisy: list[dict], cleaned_by_default: list[dict], seed: int) -> list[dict]:
    """The noisy pairs with some wrong labels put right by their gold labels:

    oracle-detected  exactly the wrong labels the new default flips (its false flips left out)
    oracle-random    as many wrong labels as that, drawn at random
    oracle-easy      every wrong label whose true reward difference is at least 2 (synth's scores are integers)
    """
    wrong = [r["id"] for r in noisy if r["gold_chosen"] < r["gold_rejected"]]
    detected = {r["id"] for r in cleaned_by_default if r.get("clean_action") == "flip"} & set(wrong)
    if kind == "oracle-detected":
        fix = detected
    elif kind == "oracle-random":
        fix = set(random.Random(seed).sample(wrong, len(detected)))
    else:
        fix = {r["id"] for r in noisy if r["gold_rejected"] - r["gold_chosen"] >= 2}
    return [dict(flip(r), clean_action="flip") if r["id"] in fix else dict(r, clean_action="keep")
            for r in noisy]


def strength_name(flags: list[str]) -> str:
    """A file-name tag for a strength setting: ['--member-epochs', '2'] -> 'member-epochs-2'."""
    return "-".join(f.lstrip("-") for f in flags) or "new"


def add_missing(into: dict, other: dict) -> None:
    """Copy into ``into`` (in place, nested dicts too) whatever ``other`` has and it lacks."""
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            add_missing(into[key], value)
        elif key not in into:
            into[key] = value


def save(path: Path, result: dict) -> None:
    """Write a cell's result with what another run wrote meanwhile kept (this run's numbers win)."""
    if path.exists():
        add_missing(result, json.loads(path.read_text()))
    path.write_text(json.dumps(result, indent=1))


def run_cell(out: Path, n: int, noise: float, seed: int, variants: list[str], model: str, epochs: str) -> dict:
    cell = out / f"n{n}-noise{noise}-seed{seed}"
    cell.mkdir(parents=True, exist_ok=True)
    result_path = cell / "result.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else {"n": n, "noise": noise, "seed": seed,
                                                                                 "heldout_accuracy": {}}
    noisy, gold, held = cell / "noisy.jsonl", out / f"gold-n{n}-seed{seed}.jsonl", out / f"heldout-seed{seed}.jsonl"
    if not noisy.exists():
        rlhfkit("synth", "--n", n, "--noise", noise, "--seed", seed, "--out", noisy)
    if not gold.exists():
        rlhfkit("synth", "--n", n, "--noise", 0, "--seed", seed, "--out", gold)
    if not held.exists():
        rlhfkit("synth", "--n", 500, "--noise", 0, "--seed", 10_000 + seed, "--out", held)

    def strength(name: str, *flags) -> dict:
        path = cell / f"strength-{name}.jsonl"
        key = f"strength_{name}"
        if key not in result or not path.exists():  # a result copied from elsewhere still needs its file
            t0 = time.perf_counter()
            _, s = rlhfkit("strength", noisy, "--model", model, *flags, "--seed", seed, "--out", path)
            result[key] = {k: s.get(k) for k in ("noisy_auroc", "noise_rate_estimate", "p_wrong_ece",
                                                 "fraction_mean_below_0", "members", "std_median",
                                                 "noisy_auroc_fold_models", "seconds_spread") if k in s}
            result[key]["seconds"] = round(time.perf_counter() - t0, 1)
            save(result_path, result)
        return result[key]

    strength("new")
    if "old" in variants:
        strength("old", "--in-sample")
    sets = {"noisy": noisy, "gold": gold}
    quality = result.setdefault("flip_quality", {})
    for v in variants:
        if v in sets:
            continue
        if v in THROUGH:
            continue  # trains on a set made here (noisy or clean-new.jsonl) below
        path = cell / f"clean-{v}.jsonl"
        summary: dict = {}
        if not path.exists():
            if v == "old":
                _, summary = rlhfkit("clean", cell / "strength-old.jsonl", "--flip-below", 0, "--out", path)
            elif v in LEVERS:
                strength_flags, clean_flags = LEVERS[v]
                strength(strength_name(strength_flags), *strength_flags)
                _, summary = rlhfkit("clean", cell / f"strength-{strength_name(strength_flags)}.jsonl", *clean_flags,
                                     "--out", path)
            elif v in ORACLES:
                if not (cell / "clean-new.jsonl").exists():
                    rlhfkit("clean", cell / "strength-new.jsonl", *CLEAN_FLAGS["new"], "--out", cell / "clean-new.jsonl")
                write_jsonl(path, oracle_rows(v, read_jsonl(noisy), read_jsonl(cell / "clean-new.jsonl"), seed))
            elif v == "cleanlab":
                rows = read_jsonl(cell / "strength-new.jsonl")
                flags = flipped_by_cleanlab(rows)
                write_jsonl(path, [dict(flip(r), clean_action="flip") if f else dict(r, clean_action="keep")
                                   for r, f in zip(rows, flags)])
            else:
                _, summary = rlhfkit("clean", cell / "strength-new.jsonl", *CLEAN_FLAGS[v], "--rejects",
                                     cell / f"rejects-{v}.jsonl", "--out", path)
        if "kept" not in quality.get(v, {}):
            rows = read_jsonl(path)
            flipped = [r for r in rows if r.get("clean_action") == "flip"]
            true_flips = sum(bool(r["noisy"]) for r in flipped)
            injected = round(noise * n)
            entry = quality.setdefault(v, {})
            entry.update({"flipped": len(flipped), "precision": true_flips / len(flipped) if flipped else None,
                          "recall": true_flips / injected if injected else None,
                          "fraction_flipped": round(len(flipped) / n, 4), "kept": len(rows),
                          "wrong_labels_left": sum(bool(r["gold_chosen"] < r["gold_rejected"]) for r in rows)})
            if summary.get("expected_noise_left") is not None:
                entry["expected_noise_left"] = summary["expected_noise_left"]
            save(result_path, result)
        sets[v] = path
    for v in set(variants) & set(THROUGH):
        base = THROUGH[v][0]
        sets[v] = noisy if base == "noisy" else sets.get("new", cell / "clean-new.jsonl")
        if base == "new" and quality.get("new", {}).get("expected_noise_left") is None:
            _, s = rlhfkit("clean", cell / "strength-new.jsonl", "--flip", "--out", cell / "clean-new.jsonl")
            quality.setdefault("new", {})["expected_noise_left"] = s.get("expected_noise_left")
    acc = result["heldout_accuracy"]
    for v in variants:
        if v in acc:
            continue
        gold_model = out / f"rm-gold-n{n}-seed{seed}"
        target = gold_model if v == "gold" else cell / f"rm-{v}"
        if v == "gold" and (gold_model / "rlhfkit.json").exists():
            acc[v] = json.loads((gold_model / "accuracy.json").read_text())["accuracy"]
            continue
        if (target / "model.safetensors").exists():  # trained by a run that stopped before recording it
            scored = [json.loads(line) for line in rlhfkit("score", held, "--reward", target)[0].splitlines()]
            acc[v] = sum(r["reward_chosen"] > r["reward_rejected"] for r in scored) / len(scored)
            save(result_path, result)
            continue
        extra = []
        if v in THROUGH:
            _, loss, source = THROUGH[v]
            rate = quality["new"]["expected_noise_left"] if source == "left" else result["strength_new"]["noise_rate_estimate"]
            extra = ["--noise-rate", min(0.45, rate), "--noise-loss", loss]
        _, tr = rlhfkit("train-rm", sets[v], "--model", model, "--out", target, "--lr", "5e-5", "--batch-size", 16,
                        "--epochs", epochs, "--warmup-ratio", 0.1, "--save-steps", 0, "--eval", held, "--seed", seed,
                        *extra)
        acc[v] = tr["eval_accuracy"]
        if v == "gold":
            (gold_model / "accuracy.json").write_text(json.dumps({"accuracy": acc[v]}))
        save(result_path, result)
    save(result_path, result)
    return result


def table(out: Path) -> str:
    cells = [json.loads(p.read_text()) for p in sorted(out.glob("n*-noise*-seed*/result.json"))]
    by_level: dict = {}
    for c in cells:
        by_level.setdefault((c["n"], c["noise"]), []).append(c)

    def ms(values):
        values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if not values:
            return "–"
        digits = 0 if all(isinstance(v, int) for v in values) else 3
        if len(values) == 1:
            return f"{values[0]:.{digits}f}"
        return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"

    lines = ["| n | noise | seeds | set | flips (share of pairs) | flip precision | flip recall | pairs kept | wrong labels left "
             "| held-out accuracy | share of the noisy → gold gap closed |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (n, noise), cs in sorted(by_level.items()):
        for v in VARIANTS:
            accs = [c["heldout_accuracy"].get(v) for c in cs]
            if all(a is None for a in accs):
                continue
            q = [c.get("flip_quality", {}).get(v, {}) for c in cs if c["heldout_accuracy"].get(v) is not None]
            closed = [(c["heldout_accuracy"][v] - c["heldout_accuracy"]["noisy"])
                      / (c["heldout_accuracy"]["gold"] - c["heldout_accuracy"]["noisy"])
                      for c in cs if v in c["heldout_accuracy"] and "noisy" in c["heldout_accuracy"]
                      and "gold" in c["heldout_accuracy"] and c["heldout_accuracy"]["gold"] != c["heldout_accuracy"]["noisy"]]
            lines.append(f"| {n} | {noise} | {sum(a is not None for a in accs)} | {v} | {ms([x.get('fraction_flipped') for x in q])} | "
                         f"{ms([x.get('precision') for x in q if x.get('flipped')])} | {ms([x.get('recall') for x in q])} | "
                         f"{ms([x.get('kept') for x in q])} | {ms([x.get('wrong_labels_left') for x in q])} | {ms(accs)} | "
                         f"{ms(closed) if v not in ('noisy', 'gold') else ''} |")
    lines += ["", "| n | noise | strength | AUROC of −mean | noise-rate estimate | ECE of P(wrong) | seconds |",
              "|---|---|---|---|---|---|---|"]
    for (n, noise), cs in sorted(by_level.items()):
        names = sorted({k[len("strength_"):] for c in cs for k in c if k.startswith("strength_")},
                       key=lambda k: (k not in ("new", "old"), k))
        for name in names:
            s = [c.get(f"strength_{name}") for c in cs if c.get(f"strength_{name}")]
            if s:
                lines.append(f"| {n} | {noise} | {name} ({len(s)} seeds) | {ms([x['noisy_auroc'] for x in s])} | "
                             f"{ms([x['noise_rate_estimate'] for x in s])} | {ms([x.get('p_wrong_ece') for x in s])} | "
                             f"{ms([x['seconds'] for x in s])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.4])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=VARIANTS,
                    help=f"default: {' '.join(DEFAULT_VARIANTS)}; also the levers {' '.join(LEVERS)} and the "
                         f"gold-label diagnoses {' '.join(ORACLES)}")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--epochs", default="2")
    ap.add_argument("--out", default="bench-out/noise_synth_3f3e")
    ap.add_argument("--summary", action="store_true", help="only print the table of what --out holds")
    ap.add_argument("--save", help="also write every cell's result to this JSON file (raw numbers behind the table)")
    a = ap.parse_args()
    out = Path(a.out)
    if not a.summary:
        for noise in a.noise:
            for seed in a.seeds:
                variants = [v for v in a.variants if not (noise == 0 and v == "noisy")]  # at noise 0 noisy is gold
                r = run_cell(out, a.n, noise, seed, variants, a.model, a.epochs)
                print(json.dumps(r), flush=True)
    print(table(out))
    if a.save:
        cells = [json.loads(p.read_text()) for p in sorted(out.glob("n*-noise*-seed*/result.json"))]
        Path(a.save).write_text(json.dumps({"command": "python benchmarks/noise_synth.py (cells grown over several runs)",
                                            "machine": "2-core CPU, one thread per process", "cells": cells}, indent=1))


if __name__ == "__main__":
    main()
