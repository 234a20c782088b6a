"""Pairing two generation files: by `id` when both files carry ids, else by prompt."""

from __future__ import annotations

from typing import Sequence

from ..prompts import prompt_key
from ..records import Example, as_text


def join(a: Sequence[Example], b: Sequence[Example]) -> tuple[list[tuple[Example, Example]], list[Example]]:
    """Matched (a, b) pairs in A's order, and the records of either file left without a partner."""
    by_id = all("id" in e.raw for e in a) and all("id" in e.raw for e in b)
    key = (lambda e: str(e.raw["id"])) if by_id else (lambda e: prompt_key(e.prompt))
    index: dict[str, list[Example]] = {}
    for e in b:
        index.setdefault(key(e), []).append(e)
    pairs, unmatched = [], []
    for e in a:
        partners = index.get(key(e))
        if partners:
            pairs.append((e, partners.pop(0)))
        else:
            unmatched.append(e)
    unmatched.extend(e for rest in index.values() for e in rest)
    return pairs, unmatched


def question_text(e: Example) -> str:
    return as_text(e.prompt).strip()
