"""Synthetic preference data with a hidden gold reward, and a known fraction of flipped labels.

Responses are short film reviews built clause by clause from a small sentiment lexicon. The gold
reward is transparent: each clause scores +1 (positive word) or -1 (negative word), doubled by an
intensifier ("very", "truly", ...). A pair prefers the review with the higher gold score; then
exactly round(noise * n) pairs, chosen at random, have chosen and rejected swapped and are marked
``noisy: true``. Because the truth is known, anyone can measure how well strength/clean find them.
"""

from __future__ import annotations

import random
from typing import Iterator

POSITIVE = [
    "brilliant", "moving", "delightful", "gripping", "superb", "charming", "beautiful", "clever",
    "heartfelt", "stunning", "funny", "thoughtful", "vivid", "masterful", "engaging", "warm",
    "inventive", "graceful", "powerful", "witty",
]
NEGATIVE = [
    "dull", "clumsy", "tedious", "shallow", "boring", "awful", "lifeless", "confusing",
    "predictable", "bland", "messy", "annoying", "forgettable", "weak", "painful", "hollow",
    "sloppy", "stiff", "pointless", "cheap",
]
INTENSIFIERS = ["very", "truly", "remarkably", "utterly"]
ASPECTS = [
    "the plot", "the acting", "the soundtrack", "the dialogue", "the ending", "the camera work",
    "the pacing", "the lead performance", "the script", "the editing", "the set design", "the humour",
]
TITLES = [
    "The Long Harbour", "Paper Moons", "A Quiet Winter", "Red Valley", "The Glass Orchard",
    "Northbound", "Saltwater Kings", "The Last Lantern", "Echo Park Blues", "Ironwood",
    "City of Kites", "The Borrowed Summer", "Night Ferry", "Hollow Hills", "The Clockmaker",
]
PROMPTS = [
    "Write a short review of the film '{t}'.",
    "What did you think of '{t}'?",
    "Give your opinion of the movie '{t}' in a few sentences.",
    "Describe your reaction to '{t}'.",
]


def clause(rng: random.Random, aspect: str, positive_share: float = 0.5) -> tuple[str, float]:
    """One clause about ``aspect`` and its gold score (±1, ±2 with an intensifier)."""
    positive = rng.random() < positive_share
    word = rng.choice(POSITIVE if positive else NEGATIVE)
    strength = 1.0
    if rng.random() < 0.3:
        word = f"{rng.choice(INTENSIFIERS)} {word}"
        strength = 2.0
    return f"{aspect} was {word}", strength if positive else -strength


def review(rng: random.Random, positive_share: float = 0.5) -> tuple[str, float]:
    """A review of 1-3 clauses and its gold reward (sum of clause scores)."""
    parts = [clause(rng, aspect, positive_share) for aspect in rng.sample(ASPECTS, rng.randint(1, 3))]
    texts = [t for t, _ in parts]
    sentence = texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " and " + texts[-1]
    return sentence[0].upper() + sentence[1:] + ".", sum(s for _, s in parts)


def gold_reward(text: str) -> float:
    """Recompute a synthetic review's gold score from its text (the lexicon is the whole truth)."""
    words = text.lower().replace(",", " ").replace(".", " ").split()
    score = 0.0
    for i, w in enumerate(words):
        sign = 1.0 if w in POSITIVE else -1.0 if w in NEGATIVE else 0.0
        if sign:
            score += sign * (2.0 if i > 0 and words[i - 1] in INTENSIFIERS else 1.0)
    return score


def gold(prompt: str, response: str) -> float:
    """The gold reward as a PPO reward function (``rlhfkit ppo --reward rlhfkit.synth:gold``)."""
    return gold_reward(response)


def _prompt(rng: random.Random) -> str:
    return rng.choice(PROMPTS).format(t=rng.choice(TITLES))


def pairs(n: int, noise: float, seed: int, min_gap: float = 1.0) -> Iterator[dict]:
    """n pair records; exactly round(noise * n) of them flipped and marked noisy."""
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"--noise must lie in [0, 1], got {noise}")
    rng = random.Random(seed)
    # a separate stream for the flips: the same seed gives the same pairs at every noise level
    flipped = set(random.Random(f"flips-{seed}").sample(range(n), round(noise * n)))
    for i in range(n):
        prompt = _prompt(rng)
        while True:
            (a, ga), (b, gb) = review(rng), review(rng)
            if abs(ga - gb) >= min_gap and a != b:
                break
        (c, gc), (r, gr) = ((a, ga), (b, gb)) if ga > gb else ((b, gb), (a, ga))
        noisy = i in flipped
        if noisy:
            (c, gc), (r, gr) = (r, gr), (c, gc)
        yield {
            "id": f"synth-{seed}-{i}", "prompt": prompt, "chosen": c, "rejected": r,
            "gold_chosen": gc, "gold_rejected": gr, "noisy": noisy,
        }


def rankings(n: int, responses: int, seed: int) -> Iterator[dict]:
    """n ranking records of ``responses`` distinct reviews, best first by gold; half open-ended."""
    if not 2 <= responses <= 10:
        raise ValueError(f"--responses must lie in [2, 10] (distinct gold scores), got {responses}")
    rng = random.Random(seed)
    for i in range(n):
        pool: dict[str, float] = {}
        while len(pool) < responses:
            text, g = review(rng)
            if g not in pool.values():
                pool[text] = g
        ordered = sorted(pool.items(), key=lambda kv: -kv[1])
        yield {
            "id": f"synth-rank-{seed}-{i}", "prompt": _prompt(rng),
            "responses": [t for t, _ in ordered], "scores": [g for _, g in ordered],
            "open_ended": rng.random() < 0.5,
        }


def reviews(n: int, seed: int, positive_share: float = 0.5) -> Iterator[dict]:
    """n prompt -> review records (SFT data for the world's policy), each clause positive with
    probability ``positive_share``: 0.5 is synth's own distribution, lower gives a reference
    biased towards negative reviews (PM RLHF's biased-reference case)."""
    if not 0.0 <= positive_share <= 1.0:
        raise ValueError(f"--positive-share must lie in [0, 1], got {positive_share}")
    rng = random.Random(f"reviews-{seed}")
    for i in range(n):
        prompt = _prompt(rng)
        text, score = review(rng, positive_share)
        yield {"id": f"synth-review-{seed}-{i}", "prompt": prompt, "response": text, "gold": score}


def vocabulary() -> list[str]:
    """Every word and punctuation mark synth writes, prompts included: the world's tokenizer."""
    words: set[str] = set(POSITIVE) | set(NEGATIVE) | set(INTENSIFIERS) | {"was", "and", ",", ".", "'", "?"}
    for phrase in ASPECTS + TITLES + [p.replace("{t}", "") for p in PROMPTS]:
        for w in phrase.replace("'", " ' ").replace(".", " . ").replace("?", " ? ").split():
            words.add(w)
            words.add(w[0].upper() + w[1:])  # sentence-initial forms ("The plot was ...")
    return sorted(words)
