"""Prompts and rankings built from raw text: the constructions the papers' experiments use."""

from __future__ import annotations

import random
from typing import Any, Iterable, Iterator

OPEN_SUFFIX = " Write the answer in an open-ended way."
CLOSED_SUFFIX = " Write either a short answer or a long answer."
OPEN_LENGTHS = [10, 20, 30, 40, 50, 60, 70, 80]
CLOSED_LENGTHS = [16, 22, 28, 34, 56, 62, 68, 74]


def text_of(record: dict, fields: Iterable[str]) -> Any:
    for f in fields:
        if f in record and record[f]:
            return record[f]
    return None


def prefix_rankings(rows: Iterable[tuple[str, str]], min_words: int = 100, seed: int = 0) -> Iterator[dict]:
    """Reward Collapse's construction: each answer of at least ``min_words`` words becomes 8
    prefixes, longer preferred. Open-ended prompts (half, at random) use prefixes of 10, 20, …, 80
    words; closed-ended ones two clusters, 16-34 and 56-74 words; the prompt gets a suffix saying which."""
    rng = random.Random(seed)
    for i, (prompt, answer) in enumerate(rows):
        words = answer.split()
        if len(words) < min_words:
            continue
        open_ended = rng.random() < 0.5
        lengths = OPEN_LENGTHS if open_ended else CLOSED_LENGTHS
        yield {
            "id": f"prefix-{i}", "prompt": prompt.rstrip() + (OPEN_SUFFIX if open_ended else CLOSED_SUFFIX),
            "responses": [" ".join(words[:n]) for n in sorted(lengths, reverse=True)],
            "open_ended": open_ended,
        }


def short_prompts(texts: Iterable[str], min_words: int = 2, max_words: int = 8, seed: int = 0) -> Iterator[dict]:
    """The first 2-8 words (length drawn per text) of each text as a prompt to continue."""
    rng = random.Random(seed)
    for i, text in enumerate(texts):
        words = text.split()
        if len(words) < min_words:
            continue
        n = rng.randint(min_words, min(max_words, len(words)))
        yield {"id": f"prompt-{i}", "prompt": " ".join(words[:n])}
