"""Sampling responses from a policy, batched with the KV cache."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .models import load_model, load_tokenizer, resolve_dtype
from .ppo.policy import encode_prompts, generate


def sample_responses(policy: str, prompts: Sequence[Any], n: int = 1, batch_size: int = 16, max_new_tokens: int = 64,
                     temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False, seed: int = 0,
                     max_prompt_length: int = 256, progress=None) -> list[list[str]]:
    """``n`` responses per prompt (a list per prompt)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = load_tokenizer(policy)
    model = load_model(policy, "causal-lm", dtype=resolve_dtype("auto", device)).to(device).eval()
    torch.manual_seed(seed)
    flat = [(i, p) for i, p in enumerate(prompts) for _ in range(n)]
    out: list[list[str]] = [[] for _ in prompts]
    for s in range(0, len(flat), batch_size):
        chunk = flat[s : s + batch_size]
        ids, mask = encode_prompts(tok, [p for _, p in chunk], max_prompt_length, device)
        resp, rmask = generate(model, tok, ids, mask, max_new_tokens, temperature, top_p, greedy)
        texts = tok.batch_decode(resp * rmask + tok.pad_token_id * (1 - rmask), skip_special_tokens=True)
        for (i, _), text in zip(chunk, texts):
            out[i].append(text)
        if progress is not None:
            progress(len(chunk))
    return out
