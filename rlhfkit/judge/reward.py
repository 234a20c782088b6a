"""A reward model as judge: score every generation, summarise each policy's rewards."""

from __future__ import annotations

import statistics
from typing import Any, Sequence

from ..records import Example


def chat_messages(prompt: Any, response: Any) -> tuple[list, list]:
    """A (prompt, response) as chat messages, for reward models that expect their chat template."""
    p = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    r = response if isinstance(response, list) else [{"role": "assistant", "content": response}]
    return p, r


def use_chat_template(scorer, mode: str) -> bool:
    """auto: when the reward model's tokenizer has a chat template and rlhfkit did not train it
    (rlhfkit's own reward models read plain joined text)."""
    tok = getattr(scorer, "tokenizer", None)
    has_template = bool(getattr(tok, "chat_template", None))
    if mode == "on":
        return has_template
    if mode == "off":
        return False
    return has_template and not getattr(scorer, "meta", None)


def describe(rewards: Sequence[float]) -> dict:
    return {
        "n": len(rewards), "mean": statistics.fmean(rewards),
        "std": statistics.stdev(rewards) if len(rewards) > 1 else 0.0,
        "median": statistics.median(rewards), "min": min(rewards), "max": max(rewards),
    }


def judge_with_reward(scorer, files: dict[str, Sequence[Example]], chat: bool, batch_size: int = 32, progress=None):
    """Scored records (with `reward` and `source`) and per-file statistics."""
    records, stats = [], {}
    for name, examples in files.items():
        prompts, responses = [], []
        for e in examples:
            p, r = chat_messages(e.prompt, e.response) if chat else (e.prompt, e.response)
            prompts.append(p)
            responses.append(r)
        rewards = scorer.score(prompts, responses, batch_size, progress)
        values = rewards.mean(dim=1).tolist()
        for e, v, row in zip(examples, values, rewards.tolist()):
            extra = {"rewards": row} if len(row) > 1 else {}
            records.append(e.output(reward=v, source=name, **extra))
        stats[name] = describe(values)
    return records, stats
