"""Cleaning decisions from preference strength (Secrets of RLHF II §2), pure over numbers and records.

Each pair gets one action, in this precedence: drop > flip > smooth > keep. A margin, when asked
for, is set on every pair that stays: margin_scale · max(μ, 0), with μ the strength of the pair as
written after any flip (so flipped pairs get a margin from their new, positive strength).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from ..records import swapped_sides


KEEP, FLIP, SMOOTH, DROP = "keep", "flip", "smooth", "drop"


CONFIDENCE = 0.8  # default: flip when P(label wrong) >= 0.8 (benchmarks/noise_synth.py, docs/results.md)


@dataclass
class Rules:
    flip: bool = False
    flip_below: float | None = None  # a strength threshold instead of the confident rule
    flip_fraction: float | None = None  # or the lowest fraction of pairs
    confidence: float = CONFIDENCE  # the confident rule: P(label wrong) >= this
    drop_wrong: bool = False  # drop, not flip, the pairs the flip rule picks
    drop_uncertain: float | None = None  # drop pairs with this <= P(label wrong) < confidence
    soft: bool = False  # label = P(the pair as written is right), from the calibrated P(label wrong)
    smooth: float | None = None  # soft label 1 − A for the pairs selected
    smooth_below: float = 0.0
    margin: bool = False
    margin_scale: float = 0.5
    drop_below: float | None = None
    drop_ambiguous: tuple[float, float] | None = None

    @property
    def confident_rule(self) -> bool:
        """Whether pairs are picked by P(label wrong) rather than by a strength threshold or fraction."""
        return self.flip_below is None and self.flip_fraction is None

    @property
    def needs_p_wrong(self) -> bool:
        return ((self.flip or self.drop_wrong) and self.confident_rule) or self.drop_uncertain is not None or self.soft


def without_p_wrong(rules: Rules) -> Rules:
    """The rules with those that need P(label wrong) switched off (flip/drop by the confident rule,
    --drop-uncertain, --soft); threshold and fraction rules, margins and smoothing stay."""
    confident = rules.confident_rule
    return replace(rules, flip=rules.flip and not confident, drop_wrong=rules.drop_wrong and not confident,
                   drop_uncertain=None, soft=False)


def lowest_fraction_threshold(means: Sequence[float], fraction: float) -> float:
    """The strength below which exactly round(fraction · n) pairs lie (ties broken by position)."""
    k = round(fraction * len(means))
    if k <= 0:
        return float("-inf")
    return sorted(means)[k - 1]


def picked(means: Sequence[float], rules: Rules, p_wrong: Sequence[float] | None = None,
           unanimous: Sequence[bool] | None = None) -> set[int]:
    """The pairs the flip rule picks: P(label wrong) ≥ confidence (and every member against the
    label), or strength below --flip-below, or the lowest --flip-fraction."""
    if rules.flip_fraction is not None:
        k = round(rules.flip_fraction * len(means))
        return set(sorted(range(len(means)), key=lambda i: (means[i], i))[:k])
    if rules.flip_below is not None:
        return {i for i, m in enumerate(means) if m < rules.flip_below}
    if p_wrong is None:
        raise ValueError("the confident flip rule needs P(label wrong) per pair")
    return {i for i, p in enumerate(p_wrong) if p >= rules.confidence and (unanimous is None or unanimous[i])}


def decide(means: Sequence[float], rules: Rules, p_wrong: Sequence[float] | None = None,
           unanimous: Sequence[bool] | None = None) -> list[str]:
    """An action for every pair from its strength mean μ (and, for the default rules, its
    calibrated P(label wrong) and whether every member disagrees with the label)."""
    chosen = picked(means, rules, p_wrong, unanimous) if (rules.flip or rules.drop_wrong) else set()
    actions = []
    for i, m in enumerate(means):
        if rules.drop_below is not None and m < rules.drop_below:
            actions.append(DROP)
        elif rules.drop_ambiguous is not None and rules.drop_ambiguous[0] <= m <= rules.drop_ambiguous[1]:
            actions.append(DROP)
        elif i in chosen:
            actions.append(DROP if rules.drop_wrong else FLIP)
        elif rules.drop_uncertain is not None and rules.drop_uncertain <= p_wrong[i] < rules.confidence:
            actions.append(DROP)
        elif rules.smooth is not None and m < rules.smooth_below:
            actions.append(SMOOTH)
        else:
            actions.append(KEEP)
    return actions


def apply(record: dict, action: str, rules: Rules, p_wrong: float | None = None) -> dict:
    """The record as cleaned: chosen/rejected swapped, strength and margin negated on flip (`label` kept),
    `label` on smooth, `label` = P(the pair as written is right) with --soft, `margin` when asked;
    `clean_action` records what was done."""
    out = dict(record)
    if action == FLIP:
        # `label` stays: it is P(chosen is better), and after the swap the corrected order is what it
        # states; 1 − label would state the original order again and undo the flip under a soft-label loss.
        # (swapped_sides negates the margin with the strength: both are stated chosen → rejected)
        out = swapped_sides(record)
    elif action == SMOOTH:
        out["label"] = 1.0 - rules.smooth
    if rules.soft and action != DROP and p_wrong is not None:
        out["label"] = float(p_wrong if action == FLIP else 1.0 - p_wrong)
    if rules.margin and action != DROP:
        out["margin"] = rules.margin_scale * max(out["strength_mean"], 0.0)
    out["clean_action"] = action
    return out


def flip_quality(actions: Sequence[str], noisy: Sequence[bool]) -> dict:
    """Precision and recall of the flips against known injected noise (synth's `noisy`)."""
    flipped = [a == FLIP for a in actions]
    tp = sum(f and t for f, t in zip(flipped, noisy))
    return {
        "flipped": sum(flipped), "noisy": sum(map(bool, noisy)), "true_flips": tp,
        "precision": tp / sum(flipped) if any(flipped) else None,  # undefined without flips
        "recall": tp / max(1, sum(map(bool, noisy))),
    }
