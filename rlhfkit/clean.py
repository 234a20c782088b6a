"""Cleaning decisions from preference strength (Secrets of RLHF II §2), pure over numbers and records.

Each pair gets one action, in this precedence: drop > flip > smooth > keep. A margin, when asked
for, is set on every pair that stays: margin_scale · max(μ, 0), with μ the strength of the pair as
written after any flip (so flipped pairs get a margin from their new, positive strength).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

KEEP, FLIP, SMOOTH, DROP = "keep", "flip", "smooth", "drop"


@dataclass
class Rules:
    flip: bool = False
    flip_below: float = 0.0
    flip_fraction: float | None = None  # flip the lowest fraction instead of a threshold
    smooth: float | None = None  # soft label 1 − A for the pairs selected
    smooth_below: float = 0.0
    margin: bool = False
    margin_scale: float = 0.5
    drop_below: float | None = None
    drop_ambiguous: tuple[float, float] | None = None


def lowest_fraction_threshold(means: Sequence[float], fraction: float) -> float:
    """The strength below which exactly round(fraction · n) pairs lie (ties broken by position)."""
    k = round(fraction * len(means))
    if k <= 0:
        return float("-inf")
    return sorted(means)[k - 1]


def decide(means: Sequence[float], rules: Rules) -> list[str]:
    """An action for every pair from its strength mean μ."""
    if rules.flip_fraction is not None:
        k = round(rules.flip_fraction * len(means))
        flip_set = set(sorted(range(len(means)), key=lambda i: (means[i], i))[:k]) if rules.flip else set()
    else:
        flip_set = {i for i, m in enumerate(means) if rules.flip and m < rules.flip_below}
    actions = []
    for i, m in enumerate(means):
        if rules.drop_below is not None and m < rules.drop_below:
            actions.append(DROP)
        elif rules.drop_ambiguous is not None and rules.drop_ambiguous[0] <= m <= rules.drop_ambiguous[1]:
            actions.append(DROP)
        elif i in flip_set:
            actions.append(FLIP)
        elif rules.smooth is not None and m < rules.smooth_below:
            actions.append(SMOOTH)
        else:
            actions.append(KEEP)
    return actions


def apply(record: dict, action: str, rules: Rules) -> dict:
    """The record as cleaned: chosen/rejected swapped and strength negated on flip (`label` kept),
    `label` on smooth, `margin` when asked; `clean_action` records what was done."""
    out = dict(record)
    if action == FLIP:
        out["chosen"], out["rejected"] = record["rejected"], record["chosen"]
        out["strength_mean"] = -record["strength_mean"]
        if "strength_margins" in record:
            out["strength_margins"] = [-d for d in record["strength_margins"]]
        # `label` stays: it is P(chosen is better), and after the swap the corrected order is what it
        # states; 1 − label would state the original order again and undo the flip under a soft-label loss
        for a, b in (("gold_chosen", "gold_rejected"), ("reward_chosen", "reward_rejected")):
            if a in record and b in record:
                out[a], out[b] = record[b], record[a]
    elif action == SMOOTH:
        out["label"] = 1.0 - rules.smooth
    if rules.margin and action != DROP:
        out["margin"] = rules.margin_scale * max(out["strength_mean"], 0.0)
    out["clean_action"] = action
    return out


def flip_quality(actions: Sequence[str], noisy: Sequence[bool]) -> dict:
    """Precision and recall of the flips against known injected noise (synth's `noisy`)."""
    flipped = torch.tensor([a == FLIP for a in actions])
    truth = torch.tensor(list(noisy))
    tp = int((flipped & truth).sum())
    return {
        "flipped": int(flipped.sum()), "noisy": int(truth.sum()), "true_flips": tp,
        "precision": tp / max(1, int(flipped.sum())), "recall": tp / max(1, int(truth.sum())),
    }
