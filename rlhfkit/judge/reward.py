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


def pairwise_verdicts(records: Sequence[dict], file_a: str, file_b: str, reward: str) -> list[dict]:
    """A reward model as a pairwise judge: scored records of A then B (matched pairs, in order) become
    one verdict each, the higher reward winning and equal rewards tying, in the LLM judge's record
    shape so that `metrics winrate` reads either judge's output."""
    a = [r for r in records if r["source"] == file_a]
    b = [r for r in records if r["source"] == file_b]
    out = []
    for x, y in zip(a, b, strict=True):
        verdict = "A" if x["reward"] > y["reward"] else "B" if y["reward"] > x["reward"] else "tie"
        out.append({"id": x.get("id"), "prompt": x.get("prompt"), "response_a": x.get("response"),
                    "response_b": y.get("response"), "source_a": file_a, "source_b": file_b, "judge_reward": reward,
                    "reward_a": x["reward"], "reward_b": y["reward"], "verdict": verdict})
    return out
