"""How likely each pair's label is wrong, from out-of-sample reward margins (pure functions).

Setting: every pair was scored by a model that did not train on it (cross-fitting), giving its
margin m = r(chosen) − r(rejected) in the order the data states. Labels are assumed flipped at
random with an unknown rate ε, independent of the texts (the noise model of Provably Robust DPO
and of confident learning). Then:

- The model's most confident pairs (largest |m|) are the ones it orders right; among them the
  given label disagrees with the model only through label noise, so the share of negative
  margins there estimates ε (``noise_rate``: the plateau of disagreement).
- That reading needs members that are sure of their confident half. Weak members are not, and
  their own mistakes there read as label noise: on gold labels, simulated members whose accuracy
  rises only to 0.7–0.95 show a "noise rate" of 0.07–0.35, and every flip it backs is one of their
  mistakes (benchmarks/noise_weak_members.py). One set of margins cannot tell weak members on clean labels from strong members on
  noisy ones (both give the same agreement curve up to its shape), so ``why_undecidable``
  refuses to decide on either sign of weakness: disagreement still falling across the confident
  half (no plateau), or an estimate of 0.30 or more, the range where weak members on lightly
  noisy data land (and where the correction below divides agreement errors by 1 − 2ε ≥ 2.5×).
  The price: strong members on labels that really are 30% wrong decide nothing either.
- At confidence |m| the observed agreement a(|m|) = ε + (1 − 2ε)·acc(|m|), where acc is the
  model's own accuracy against the truth. A monotone (isotonic) fit of agreement on |m| gives
  acc(|m|) = (a − ε)/(1 − 2ε) without knowing a single true label.
- Bayes then gives P(label wrong | m) for every pair (``p_wrong``): a disagreeing pair is wrong
  with probability acc·ε / (acc·ε + (1 − acc)(1 − ε)), an agreeing one with
  (1 − acc)·ε / ((1 − acc)·ε + acc·(1 − ε)).

On synth data (known flips) these probabilities are calibrated: ECE ≈ 0.02–0.03 and the expected
precision of the flips they choose matches the measured one (benchmarks/noise_synth.py).
"""

from __future__ import annotations

from typing import Sequence

import torch

from .clean import CONFIDENCE

PLATEAU_SHARE = 0.5  # the most confident half of the pairs estimates the noise rate
MAX_USABLE_RATE = 0.30  # above this weak members and heavy noise look alike: decide nothing
FALL_Z = 1.645  # a one-sided 95% lower bound on how much members' accuracy falls across the confident half
MIN_PLATEAU_PAIRS = 50  # fewer confident pairs than this cannot show a trend: the test is skipped
BINS = 20  # agreement is measured in up to 20 equal-count bins of |margin| (at least 25 pairs each)
MIN_BIN = 25


def noise_rate(margins: torch.Tensor, share: float = PLATEAU_SHARE) -> float:
    """ε̂: the fraction of negative margins among the ``share`` of pairs with the largest |margin|."""
    m = torch.as_tensor(margins, dtype=torch.float64)
    if len(m) == 0:
        return 0.0
    k = max(1, round(share * len(m)))
    confident = m[torch.argsort(m.abs(), descending=True)[:k]]
    return float((confident < 0).double().mean())


def confident_half_fall(margins: torch.Tensor, share: float = PLATEAU_SHARE) -> tuple[float, float]:
    """How much disagreement falls from the least to the most confident end of the confident half
    (least squares on confidence rank in [0, 1]), and its standard error. Zero on a plateau."""
    m = torch.as_tensor(margins, dtype=torch.float64)
    k = max(1, round(share * len(m)))
    if k < 3:
        return 0.0, float("inf")
    top = m[torch.argsort(m.abs(), descending=True, stable=True)[:k]].flip(0)  # rising confidence
    y = (top < 0).double()
    u = torch.linspace(0, 1, k, dtype=torch.float64)
    u = u - u.mean()
    slope = float((u * (y - y.mean())).sum() / (u * u).sum())
    residual = y - y.mean() - slope * u
    se = float(((residual * residual).sum() / (k - 2) / (u * u).sum()).sqrt())
    return -slope, se


def accuracy_needed(eps: float, confidence: float = CONFIDENCE) -> float:
    """The members' accuracy at which a pair they order against its label is wrong with
    probability ``confidence`` (solve acc·ε / (acc·ε + (1 − acc)(1 − ε)) = confidence)."""
    return confidence * (1 - eps) / (confidence * (1 - eps) + (1 - confidence) * eps)


def why_undecidable(margins: torch.Tensor, eps: float, confidence: float = CONFIDENCE,
                    probs: torch.Tensor | None = None) -> str | None:
    """Why these margins cannot back a flip at ``confidence`` given the estimated rate ``eps``
    (None: they can). The plateau reading treats members as right on every confident pair; if
    their accuracy demonstrably falls across the confident half by more than the slack a flip has
    (1 − accuracy_needed), the flips at its low end would be their mistakes. ``probs``: the
    plateau reading's P(label wrong) at ``eps``, when the caller has it already."""
    if eps >= MAX_USABLE_RATE:
        return (f"the estimated noise rate {eps:.1%} is at or above {MAX_USABLE_RATE:.0%}, where members too weak "
                "to be sure of any pair look like heavy noise")
    m = torch.as_tensor(margins, dtype=torch.float64)
    if eps <= 0 or round(PLATEAU_SHARE * len(m)) < MIN_PLATEAU_PAIRS:
        return None
    probs = p_wrong_at(m, eps) if probs is None else probs
    if not (probs >= confidence).any():
        return None  # the plateau reading flips nothing here either: nothing to refuse
    fall, se = confident_half_fall(m)
    accuracy_fall = (fall - FALL_Z * se) / (1 - 2 * eps)  # at least this, in accuracy points
    slack = 1 - accuracy_needed(eps, confidence)
    if accuracy_fall > slack:
        return (f"the members are not sure of their most confident half: their accuracy still rises across it "
                f"by at least {accuracy_fall:.0%} (a flip at P >= {confidence:g} allows {slack:.0%}), so their own "
                "mistakes there read as label noise")
    return None


def isotonic(values: Sequence[float]) -> torch.Tensor:
    """The non-decreasing sequence closest to ``values`` in squared error (pool adjacent violators)."""
    sums: list[float] = []
    counts: list[int] = []
    for v in values:
        sums.append(float(v))
        counts.append(1)
        while len(sums) > 1 and sums[-2] / counts[-2] > sums[-1] / counts[-1]:
            s, c = sums.pop(), counts.pop()
            sums[-1] += s
            counts[-1] += c
    return torch.tensor([s / c for s, c in zip(sums, counts) for _ in range(c)], dtype=torch.float64)


def model_accuracy(margins: torch.Tensor, eps: float) -> torch.Tensor:
    """acc(|m|) per pair: the model's accuracy against the (unseen) truth at that pair's confidence.

    Agreement is averaged in equal-count bins of |m| (so no estimate rests on a handful of pairs),
    made non-decreasing across bins (a more confident model is not less accurate), then corrected
    for the noise: acc = (agreement − ε)/(1 − 2ε)."""
    m = torch.as_tensor(margins, dtype=torch.float64)
    n = len(m)
    order = torch.argsort(m.abs(), stable=True)
    bins = max(1, min(BINS, n // MIN_BIN))
    chunks = torch.tensor_split(order, bins)
    agree_bins = [float((m[c] > 0).double().mean()) for c in chunks]
    sizes = [len(c) for c in chunks]
    fitted = isotonic_weighted(agree_bins, sizes)
    acc = torch.empty(n, dtype=torch.float64)
    for c, a in zip(chunks, fitted):
        acc[c] = min(1.0, max(0.0, (a - eps) / (1 - 2 * eps)))
    return acc


def isotonic_weighted(values: Sequence[float], weights: Sequence[float]) -> list[float]:
    """``isotonic`` with a weight per value (pool adjacent violators on weighted means)."""
    sums: list[float] = []
    counts: list[float] = []
    sizes: list[int] = []
    for v, w in zip(values, weights):
        sums.append(float(v) * w)
        counts.append(float(w))
        sizes.append(1)
        while len(sums) > 1 and sums[-2] / counts[-2] > sums[-1] / counts[-1]:
            s, c, k = sums.pop(), counts.pop(), sizes.pop()
            sums[-1] += s
            counts[-1] += c
            sizes[-1] += k
    return [s / c for s, c, k in zip(sums, counts, sizes) for _ in range(k)]


def read_margins(margins: torch.Tensor, eps: float | None = None,
                 confidence: float = CONFIDENCE) -> tuple[torch.Tensor, float, str | None]:
    """P(the given label is wrong) per pair, the noise rate used (estimated when not given), and
    why the margins cannot decide (None when they can).

    An estimated rate the margins cannot back (``why_undecidable``) gives 0.5 everywhere: no
    information, so nothing is flipped. A given rate is trusted up to 0.5."""
    m = torch.as_tensor(margins, dtype=torch.float64)
    estimated = eps is None
    eps = noise_rate(m) if estimated else eps
    if eps <= 0:
        return torch.zeros_like(m), 0.0, None
    coin = torch.full_like(m, 0.5)
    probs = p_wrong_at(m, eps) if eps < 0.5 else coin
    if estimated:
        reason = why_undecidable(m, eps, confidence, probs)
    else:
        reason = f"a noise rate of {eps:.0%} leaves the labels no information" if eps >= 0.5 else None
    return (coin if reason else probs), eps, reason


def p_wrong(margins: torch.Tensor, eps: float | None = None,
            confidence: float = CONFIDENCE) -> tuple[torch.Tensor, float]:
    """``read_margins`` without the reason: P(label wrong) per pair and the noise rate used."""
    probs, eps, _ = read_margins(margins, eps, confidence)
    return probs, eps


def p_wrong_at(margins: torch.Tensor, eps: float) -> torch.Tensor:
    """P(label wrong | m) at noise rate 0 < eps < 0.5, with the members' accuracy read off the data."""
    m = torch.as_tensor(margins, dtype=torch.float64)
    acc = model_accuracy(m, eps)
    tiny = 1e-12
    disagree = acc * eps / (acc * eps + (1 - acc) * (1 - eps) + tiny)
    agree = (1 - acc) * eps / ((1 - acc) * eps + acc * (1 - eps) + tiny)
    return torch.where(m < 0, disagree, agree)


def calibration(probs: Sequence[float], outcomes: Sequence[bool], bins: int = 10) -> tuple[float, list[dict]]:
    """Expected calibration error of probabilities against what happened, and the reliability table
    (per equal-width bin: mean probability, observed frequency, count)."""
    p = torch.as_tensor(list(probs), dtype=torch.float64)
    y = torch.as_tensor(list(outcomes), dtype=torch.float64)
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    which = torch.clamp(torch.bucketize(p, edges[1:-1], right=True), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        if n == 0:
            continue
        mean_p, freq = float(p[sel].mean()), float(y[sel].mean())
        ece += n / len(p) * abs(mean_p - freq)
        table.append({"bin": [float(edges[b]), float(edges[b + 1])], "mean_probability": mean_p,
                      "observed": freq, "pairs": n})
    return ece, table
