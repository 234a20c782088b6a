"""LLM-judge throughput: 200 pairs against a fake OpenAI-compatible server adding 200 ms per request,
at --concurrency 16 vs --concurrency 1. Goal: at most 1/8 of the time.

    python benchmarks/judge.py [--pairs 200] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--latency", type=float, default=0.2)
    args = ap.parse_args()

    from rlhfkit.judge.llm import JudgeSettings, run_judge
    from rlhfkit.judge.testing import FakeJudgeServer
    from rlhfkit.judge.verdicts import DEFAULT_TEMPLATE

    items = [(f"question {i}", f"[good] answer {i}", f"answer {i}") for i in range(args.pairs)]
    seconds = {}
    with FakeJudgeServer(latency=args.latency) as server:
        for concurrency in (1, 16):
            settings = JudgeSettings(model="fake", base_url=server.base_url, api_key="unused",
                                     template=DEFAULT_TEMPLATE.read_text(), concurrency=concurrency)
            start = time.perf_counter()
            results, usage = run_judge(settings, items, None)  # no cache: every request goes out
            seconds[concurrency] = time.perf_counter() - start
            assert all(r["verdict"] == "A" for r in results) and usage.requests == 2 * args.pairs
    print(json.dumps({"pairs": args.pairs, "latency_s": args.latency, "seconds_concurrency_1": round(seconds[1], 2),
                      "seconds_concurrency_16": round(seconds[16], 2), "ratio": round(seconds[16] / seconds[1], 4)}, indent=1))


if __name__ == "__main__":
    main()
