"""Reward functions for `ppo --reward FILE.py:function` in tests (a file with no test imports, so a
subprocess can load it)."""


def nothing(prompt, response):
    return 0.0


def e_count(prompt, response):
    return response.count("e") / max(1, len(response))


def byte_mix(prompt, response):
    """Varies with every token a tiny random model emits (e_count is 0 for most of its outputs)."""
    return sum(ord(c) % 7 for c in response) / (7 * max(1, len(response)))
