"""Verdict parsing and the both-orders rule, pure functions."""

from __future__ import annotations

import re
from pathlib import Path

DEFAULT_TEMPLATE = Path(__file__).with_name("pairwise.txt")
_VERDICT = re.compile(r"\[\[([ABC])\]\]")
SWAP = {"A": "B", "B": "A", "C": "C"}


_PLACEHOLDER = re.compile(r"\{(question|answer_a|answer_b)\}")


def render_template(template: str, question: str, answer_a: str, answer_b: str) -> str:
    """Fill the placeholders in one pass: text inside the answers is never substituted again,
    and braces of their own are left alone."""
    values = {"question": question, "answer_a": answer_a, "answer_b": answer_b}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def check_template(template: str) -> None:
    missing = [p for p in ("{question}", "{answer_a}", "{answer_b}") if p not in template]
    if missing:
        raise ValueError(f"the judge template lacks {', '.join(missing)}")


def parse_verdict(answer: str | None) -> str | None:
    """The last [[A]], [[B]] or [[C]] in the judge's answer; None when there is none."""
    if not answer:
        return None
    found = _VERDICT.findall(answer)
    return found[-1] if found else None


def combine(first: str, second_swapped: str) -> tuple[str, bool]:
    """Final verdict from the (A, B) order and the (B, A) order, the latter in its own labels.

    Returns "A", "B" or "tie", and whether the two orders agreed; disagreement is a tie.
    """
    second = SWAP[second_swapped]
    agree = first == second
    if not agree:
        return "tie", False
    return {"A": "A", "B": "B", "C": "tie"}[first], True
