"""Sample responses and read back their log-probabilities under the policy and a reference."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..models import load_model, load_tokenizer, resolve_dtype
from ..ppo.policy import encode_prompts, forward_response, generate


@torch.no_grad()
def sample_with_logprobs(policy: str, prompts: Sequence[Any], n: int = 1, ref: str | None = None, batch_size: int = 16,
                         max_new_tokens: int = 64, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                         max_prompt_length: int = 256, progress=None, logprobs: bool = True,
                         greedy: bool = False, chat_template: bool | None = None, dtype: str = "auto") -> list[dict]:
    """``n`` samples per prompt, in prompt order; each with its text, token ids, length and (with
    ``logprobs``) summed log π, and log π_ref when ``ref`` is given, both at temperature 1 (the
    models' own probabilities; ``temperature`` and ``top_p`` shape only the sampling). ``chat_template``:
    see ``ppo.policy.uses_chat_template``."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = resolve_dtype(dtype, device)
    tok = load_tokenizer(policy)
    model = load_model(policy, "causal-lm", dtype=dtype).to(device).eval()
    ref_model = load_model(ref, "causal-lm", dtype=dtype).to(device).eval() if ref else None
    torch.manual_seed(seed)
    flat = [(i, p) for i, p in enumerate(prompts) for _ in range(n)]
    samples = []
    for s in range(0, len(flat), batch_size):
        chunk = flat[s : s + batch_size]
        ids, mask = encode_prompts(tok, [p for _, p in chunk], max_prompt_length, device, chat_template)
        resp, rmask = generate(model, tok, ids, mask, max_new_tokens, temperature, top_p, greedy)
        # the models' own distributions (temperature 1), whatever temperature the samples were drawn at:
        # perplexity, entropy, KL and PM divergence describe the policy, not the sampler
        logp = forward_response(model, ids, mask, resp, rmask, 1.0)[0] if logprobs else None
        ref_logp = forward_response(ref_model, ids, mask, resp, rmask, 1.0)[0] if ref_model is not None else None
        texts = tok.batch_decode(resp, skip_special_tokens=True)  # generate() padded after EOS
        for k, (i, p) in enumerate(chunk):
            m = rmask[k].bool()
            sample = {"prompt_index": i, "prompt": p, "response": texts[k], "response_ids": resp[k][m].tolist(),
                      "length": int(m.sum())}
            if logp is not None:
                sample["logp"] = float(logp[k][m].double().sum())
            if ref_logp is not None:
                sample["ref_logp"] = float(ref_logp[k][m].double().sum())
            samples.append(sample)
        if progress is not None:
            progress(len(chunk))
    return samples
