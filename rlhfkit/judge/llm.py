"""Pairwise LLM judging through any OpenAI-compatible chat API (OpenAI, vLLM, llama.cpp server).

Each pair is judged in both orders at temperature 0; orders that disagree make a tie. Requests
run concurrently, retry with exponential back-off on rate limits, server errors, timeouts and
dropped connections, and every answer is cached (keyed by judge model, template, question and
the two answers in order) as soon as it arrives, so a rerun or a resumed run repeats nothing.
A pair that still fails is written with its reason, never dropped.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .cache import AnswerCache, cache_key
from .verdicts import combine, parse_verdict, render_template


@dataclass
class JudgeSettings:
    model: str
    base_url: str | None = None
    api_key: str | None = None
    template: str = ""
    concurrency: int = 8
    max_retries: int = 5
    timeout: float = 60.0
    backoff: float = 1.0  # first wait in seconds; doubled on each retry
    max_backoff: float = 60.0
    max_tokens: int = 1024
    temperature: float = 0.0


@dataclass
class Usage:
    requests: int = 0
    cached: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: dict = field(default_factory=dict)


class JudgeCallError(Exception):
    """A request that failed for good; its message is the reason written to the output."""


class MalformedReply(Exception):
    """A 200 answer that is not a chat completion (an HTML page, no choices, an error object)."""


def answer_of(reply: Any) -> tuple[str, int, int]:
    """(text, prompt tokens, completion tokens) of a chat completion, or MalformedReply."""
    choices = getattr(reply, "choices", None)
    if not choices:
        error = getattr(reply, "error", None) if not isinstance(reply, str) else None
        what = f"an error object ({error})" if error else "an HTML or non-JSON body" if isinstance(reply, str) else "no choices"
        raise MalformedReply(f"malformed reply: {what}"[:200])
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    if content is not None and not isinstance(content, str):
        raise MalformedReply("malformed reply: message content is not text")
    usage = getattr(reply, "usage", None)
    pt = getattr(usage, "prompt_tokens", 0) or 0 if usage else 0
    ct = getattr(usage, "completion_tokens", 0) or 0 if usage else 0
    return content or "", int(pt), int(ct)


def _retryable(exc: Exception) -> bool:
    import openai

    if isinstance(exc, MalformedReply):  # a proxy's error page or an overloaded server: try again
        return True
    if isinstance(exc, (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError)):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


def _reason(exc: Exception) -> str:
    import openai

    if isinstance(exc, MalformedReply):
        return str(exc)
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code} ({type(exc).__name__})"
    return type(exc).__name__


class PairwiseJudge:
    def __init__(self, settings: JudgeSettings, cache: AnswerCache, sleep: Callable[[float], Any] | None = None):
        import openai

        self.s = settings
        self.cache = cache
        self.usage = Usage()
        self.client = openai.AsyncOpenAI(base_url=settings.base_url, api_key=settings.api_key or "not-needed",
                                         max_retries=0, timeout=settings.timeout)
        self.sleep = sleep or asyncio.sleep

    async def ask(self, question: str, first: str, second: str) -> str:
        """The judge's raw answer for one order, from the cache or the API."""
        key = cache_key(self.s.model, self.s.template, question, first, second, self.s.base_url, self.s.temperature,
                        self.s.max_tokens)
        hit = self.cache.get(key)
        if hit is not None:
            self.usage.cached += 1
            return hit[0]
        content = render_template(self.s.template, question, first, second)
        for attempt in range(self.s.max_retries + 1):
            try:
                self.usage.requests += 1
                reply = await self.client.chat.completions.create(
                    model=self.s.model, messages=[{"role": "user", "content": content}], temperature=self.s.temperature,
                    max_tokens=self.s.max_tokens)
                answer, pt, ct = answer_of(reply)
                break
            except Exception as exc:  # noqa: BLE001 - classified below
                if not _retryable(exc) or attempt == self.s.max_retries:
                    reason = _reason(exc)
                    self.usage.errors[reason] = self.usage.errors.get(reason, 0) + 1
                    raise JudgeCallError(f"{reason} after {attempt + 1} attempt(s)") from None
                self.usage.retries += 1
                wait = min(self.s.max_backoff, self.s.backoff * 2**attempt) * (0.5 + random.random() / 2)
                await self.sleep(wait)
        self.usage.prompt_tokens += pt
        self.usage.completion_tokens += ct
        if parse_verdict(answer) is not None:  # an answer without a verdict is reported, not kept as final
            self.cache.put(key, answer, pt, ct)
        return answer

    async def judge_pair(self, question: str, answer_a: str, answer_b: str) -> dict:
        """Both orders → {verdict, verdict_ab, verdict_ba, raw_ab, raw_ba, orders_agree} or {error}."""
        results = await asyncio.gather(self.ask(question, answer_a, answer_b), self.ask(question, answer_b, answer_a),
                                       return_exceptions=True)
        errors = [str(r) for r in results if isinstance(r, Exception)]
        for r in results:
            if isinstance(r, Exception) and not isinstance(r, JudgeCallError):
                raise r
        if errors:
            return {"verdict": None, "error": "; ".join(errors)}
        raw_ab, raw_ba = results
        v_ab, v_ba = parse_verdict(raw_ab), parse_verdict(raw_ba)
        out = {"raw_ab": raw_ab, "raw_ba": raw_ba, "verdict_ab": v_ab, "verdict_ba": v_ba}
        if v_ab is None or v_ba is None:
            which = " and ".join(o for o, v in (("A-B", v_ab), ("B-A", v_ba)) if v is None)
            return {"verdict": None, "error": f"no [[A]]/[[B]]/[[C]] verdict in the {which} answer", **out}
        verdict, agree = combine(v_ab, v_ba)
        return {"verdict": verdict, "orders_agree": agree, **out}

    async def judge_all(self, items: Sequence[tuple[str, str, str]], progress=None) -> list[dict]:
        semaphore = asyncio.Semaphore(self.s.concurrency)

        async def one(item):
            async with semaphore:
                result = await self.judge_pair(*item)
            if progress is not None:
                progress(1)
            return result

        try:
            return await asyncio.gather(*(one(item) for item in items))
        finally:
            await self.client.close()


def run_judge(settings: JudgeSettings, items: Sequence[tuple[str, str, str]], cache_path: str | None,
              progress=None) -> tuple[list[dict], Usage]:
    """Judge (question, answer A, answer B) triples; returns one result per pair and the usage.

    The concurrency limit counts pairs, and each pair sends its two orders together, so at most
    2 x concurrency requests are in flight.
    """
    cache = AnswerCache(cache_path)
    judge = PairwiseJudge(settings, cache)
    try:
        results = asyncio.run(judge.judge_all(items, progress))
    finally:
        cache.close()
    return results, judge.usage
