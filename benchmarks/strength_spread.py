"""Does strength's std carry information? Read from noise_synth cells' default strength files.

On synth the truth is known: `noisy` marks a label that was flipped, and gold_chosen − gold_rejected
is the true score difference. For every cell (n, noise, seed) with a strength-new.jsonl:

    auroc_mean      AUROC of strength_mean for "the label is right" (the signal clean uses)
    auroc_z         the same for mean / std (a margin measured in its own spread)
    auroc_abs_mean, auroc_abs_z   unsigned: does |mean| (or |mean| / std) rank the pairs whose members'
                    order matches the gold order (members right) above those they get wrong?
    gold_gap_top_std, gold_gap_bottom_std   mean |gold difference| of the quarter of pairs with the
                    highest std, and of the quarter with the lowest
    spearman_std_gold_gap, spearman_relstd_gold_gap   rank correlation of std (and std / |mean|) with
                    |gold difference|

    python benchmarks/strength_spread.py [--out bench-out/noise_synth_spread] [--save results/strength_spread_cpu.json]

With --time FILE it also runs `strength FILE` twice in this session, with the spread heads
(the default) and without (`--heads 0`: the fold models' own margins), and reports the time ratio;
the fold models are trained identically in both (same seeds), so the difference is the heads' cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from _run import read_jsonl, rlhfkit

from rlhfkit.cleaning.strength import auroc


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ranks = [x.argsort().argsort().double() for x in (a, b)]
    return float(torch.corrcoef(torch.stack(ranks))[0, 1])


def rounded(x: float, digits: int = 4) -> float | None:
    return None if x != x else round(x, digits)  # NaN (e.g. no wrong label to find) as null


def spread_report(rows: list[dict]) -> dict:
    mean = torch.tensor([r["strength_mean"] for r in rows], dtype=torch.float64)
    std = torch.tensor([r["strength_std"] for r in rows], dtype=torch.float64)
    gold = torch.tensor([r["gold_chosen"] - r["gold_rejected"] for r in rows], dtype=torch.float64)
    right = [not r["noisy"] for r in rows]
    z = mean / std.clamp(min=1e-9)
    members_right = [(m > 0) == (g > 0) for m, g in zip(mean.tolist(), gold.tolist())]
    gap = gold.abs()
    order = torch.argsort(std)
    quarter = len(rows) // 4
    return {
        "pairs": len(rows),
        "members": statistics.median(len(r["strength_margins"]) for r in rows),
        "std_median": round(float(std.median()), 4),
        "auroc_mean": rounded(auroc(mean.tolist(), right)),
        "auroc_z": rounded(auroc(z.tolist(), right)),
        "auroc_abs_mean": rounded(auroc(mean.abs().tolist(), members_right)),
        "auroc_abs_z": rounded(auroc(z.abs().tolist(), members_right)),
        "gold_gap_top_std": round(float(gap[order[-quarter:]].mean()), 3),
        "gold_gap_bottom_std": round(float(gap[order[:quarter]].mean()), 3),
        "spearman_std_gold_gap": round(spearman(std, gap), 3),
        "spearman_relstd_gold_gap": round(spearman(std / mean.abs().clamp(min=1e-9), gap), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-out/noise_synth_spread")
    ap.add_argument("--save")
    ap.add_argument("--time", metavar="FILE", help="also time strength on FILE with and without the spread heads")
    a = ap.parse_args()
    timing = None
    if a.time:
        import time

        seconds = {}
        for name, flags in (("heads-0", ["--heads", "0"]), ("default", [])):
            t0 = time.perf_counter()
            _, s = rlhfkit("strength", a.time, *flags, "--out", f"{a.time}.strength-{name}.jsonl")
            seconds[name] = {"wall": round(time.perf_counter() - t0, 1), "reported": s.get("seconds"),
                             "spread": s.get("seconds_spread")}
        timing = {"file": a.time, "seconds": seconds,
                  "ratio_wall": round(seconds["default"]["wall"] / seconds["heads-0"]["wall"], 3)}
        print(json.dumps({"timing": timing}), flush=True)
    cells = {}
    for path in sorted(Path(a.out).glob("n*-noise*-seed*/strength-new.jsonl")):
        cells[path.parent.name] = spread_report(read_jsonl(path))
        print(path.parent.name, json.dumps(cells[path.parent.name]), flush=True)
    summary = {}  # per n and noise level: mean and sd over seeds
    for level in sorted({name.rsplit("-seed", 1)[0] for name in cells}):
        group = [c for name, c in cells.items() if name.rsplit("-seed", 1)[0] == level]
        keys = [k for k in group[0] if k not in ("pairs", "members")]
        values = {k: [c[k] for c in group if c[k] is not None] for k in keys}
        summary[level] = {k: (round(statistics.fmean(v), 4), round(statistics.stdev(v), 4) if len(v) > 1 else 0.0)
                          for k, v in values.items() if v}
        summary[level]["seeds"] = len(group)
    print(json.dumps({"mean_sd_over_seeds": summary}))
    if a.save:
        Path(a.save).write_text(json.dumps({"command": f"python benchmarks/strength_spread.py --out {a.out}"
                                            + (f" --time {a.time}" if a.time else ""),
                                            "cells": cells, "mean_sd_over_seeds": summary, "timing": timing}, indent=1))


if __name__ == "__main__":
    main()
