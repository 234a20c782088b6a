"""Reward functions for `ppo --reward FILE.py:function` in tests (a file with no test imports, so a
subprocess can load it)."""


def nothing(prompt, response):
    return 0.0


def e_count(prompt, response):
    return response.count("e") / max(1, len(response))
