"""How likely each pair's label is wrong, from out-of-sample reward margins (pure functions).

Setting: every pair was scored by a model that did not train on it (cross-fitting), giving its
margin m = r(chosen) − r(rejected) in the order the data states. Labels are assumed flipped at
random with an unknown rate ε, independent of the texts (the noise model of Provably Robust DPO
and of confident learning). Then:

- The model's most confident pairs (largest |m|) are the ones it orders right; among them the
  given label disagrees with the model only through label noise, so the share of negative
  margins there estimates ε (``noise_rate``: the plateau of disagreement).
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

PLATEAU_SHARE = 0.5  # the most confident half of the pairs estimates the noise rate
MAX_USABLE_RATE = 0.45  # above this the margins cannot tell noise from a useless model: decide nothing
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


def p_wrong(margins: torch.Tensor, eps: float | None = None) -> tuple[torch.Tensor, float]:
    """P(the given label is wrong) per pair, and the noise rate used (estimated when not given)."""
    m = torch.as_tensor(margins, dtype=torch.float64)
    eps = noise_rate(m) if eps is None else eps
    if eps <= 0:
        return torch.zeros_like(m), 0.0
    if eps >= MAX_USABLE_RATE:  # the most confident half disagrees nearly as often as not: no information
        return torch.full_like(m, 0.5), eps
    acc = model_accuracy(m, eps)
    tiny = 1e-12
    disagree = acc * eps / (acc * eps + (1 - acc) * (1 - eps) + tiny)
    agree = (1 - acc) * eps / ((1 - acc) * eps + acc * (1 - eps) + tiny)
    return torch.where(m < 0, disagree, agree), eps


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
