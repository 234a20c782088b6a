"""Policy-side pieces: prompt rendering, batched generation, per-token log-probs and values."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..records import as_text


def uses_chat_template(tokenizer, chat_template: bool | None = None) -> bool:
    """Whether prompts go through the tokenizer's chat template: ``None`` (auto) when it has one;
    False for prompts already in the policy's format (HH's "Human: … Assistant:"); True insists."""
    has = bool(getattr(tokenizer, "chat_template", None))
    if chat_template and not has:
        from ..io import UsageError

        raise UsageError("--chat-template: the policy's tokenizer has no chat template")
    return has if chat_template is None else chat_template


def render_prompt(tokenizer, prompt: Any, chat_template: bool | None = None) -> str:
    """The text a policy continues: the chat template with a generation prompt when it is used."""
    if uses_chat_template(tokenizer, chat_template):
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return as_text(prompt)


def encode_prompts(tokenizer, prompts: Sequence[Any], max_length: int, device,
                   chat_template: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt ids (generation appends on the right), truncated from the left."""
    templated = uses_chat_template(tokenizer, chat_template)
    texts = [render_prompt(tokenizer, p, templated) for p in prompts]
    sides = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    try:
        enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                        add_special_tokens=not templated)
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = sides
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


def response_mask(response_ids: torch.Tensor, eos_id: int | None) -> torch.Tensor:
    """1 up to and including the first EOS of each response, 0 after it."""
    if eos_id is None:
        return torch.ones_like(response_ids)
    is_eos = response_ids == eos_id
    after = (is_eos.cumsum(-1) - is_eos.long()) > 0  # strictly after the first EOS
    return (~after).long()


class RowSampler:
    """Sampling where each row draws from its own random stream (a logits processor for greedy
    ``generate``): temperature, then top-p, then Gumbel-max, which picks exactly a sample of the
    filtered softmax. A row's tokens then depend on its seed alone, not on which rows share its
    batch or how many processes split the batch: one process and eight give the same rollouts, and
    a run resumed at another process count continues the same way."""

    def __init__(self, seeds: Sequence[int], temperature: float = 1.0, top_p: float = 1.0):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logits = scores.float() / self.temperature
        if self.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
            cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
            drop_sorted = cum - torch.softmax(sorted_logits, dim=-1) >= self.top_p  # keep the smallest nucleus
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            logits = logits.masked_fill(drop, float("-inf"))
        vocab = logits.shape[-1]
        u = torch.stack([torch.rand(vocab, generator=g, dtype=torch.float64) for g in self.generators])
        gumbel = -torch.log(-torch.log(u.clamp(1e-300, 1 - 1e-16)))
        return logits + gumbel.to(logits.device, logits.dtype)


@torch.no_grad()
def generate(policy: nn.Module, tokenizer, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int,
             temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False,
             row_seeds: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample responses with the model's KV cache; returns (response ids, response mask).

    This is the rollout engine's one entry point: an inference server (vLLM, SGLang) would replace
    this function. With ``row_seeds``, every row samples from its own stream (``RowSampler``)."""
    from transformers import LogitsProcessorList

    eos = tokenizer.eos_token_id
    common = dict(input_ids=prompt_ids, attention_mask=prompt_mask, max_new_tokens=max_new_tokens,
                  pad_token_id=tokenizer.pad_token_id, eos_token_id=eos, use_cache=True)
    if greedy:
        out = policy.generate(**common, do_sample=False, temperature=None, top_p=None, top_k=None)
    elif row_seeds is not None:
        out = policy.generate(**common, do_sample=False, temperature=None, top_p=None, top_k=None,
                              logits_processor=LogitsProcessorList([RowSampler(row_seeds, temperature, top_p)]))
    else:
        out = policy.generate(**common, do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    response = out[:, prompt_ids.shape[1]:]
    mask = response_mask(response, eos)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return response.masked_fill(mask == 0, pad), mask


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def token_stats(logits: torch.Tensor, response_ids: torch.Tensor, temperature: float = 1.0,
                with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of the response tokens (and the entropy of each step's distribution) from the logits
    that predict them; the distribution is the one sampled from: logits divided by the temperature."""
    logprobs = torch.log_softmax(logits.float() / temperature, dim=-1)
    logp = logprobs.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)
    entropy = -(logprobs.exp() * logprobs).sum(-1) if with_entropy else None
    return logp, entropy


def forward_response(model: nn.Module, prompt_ids, prompt_mask, response_ids, response_mask_, temperature: float = 1.0,
                     value_head: nn.Module | None = None, with_entropy: bool = False):
    """Log-probs of the response tokens (and values, entropy) from one forward pass over prompt+response."""
    ids = torch.cat([prompt_ids, response_ids], dim=1)
    mask = torch.cat([prompt_mask, response_mask_], dim=1)
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                output_hidden_states=value_head is not None, use_cache=False)
    p = prompt_ids.shape[1]
    logp, entropy = token_stats(out.logits[:, p - 1 : -1], response_ids, temperature, with_entropy)  # t predicts t+1
    values = value_head(out.hidden_states[-1][:, p - 1 : -1]).squeeze(-1).float() if value_head is not None else None
    return logp, values, entropy


class ActorCritic(nn.Module):
    """The policy and (shared critic) its value head as one module, so that one DDP/FSDP/DeepSpeed
    wrapper sees every trainable weight; ``forward`` gives per-response-token log-probs, values and
    entropy."""

    def __init__(self, policy: nn.Module, value_head: nn.Module | None = None):
        super().__init__()
        self.policy = policy
        self.value_head = value_head

    def forward(self, prompt_ids, prompt_mask, response_ids, response_mask_, temperature: float = 1.0,
                with_entropy: bool = False):
        return forward_response(self.policy, prompt_ids, prompt_mask, response_ids, response_mask_, temperature,
                                self.value_head, with_entropy)


class ValueHead(nn.Module):
    """A scalar value per position, read from the policy's (or critic's) last hidden state."""

    def __init__(self, hidden: int):
        super().__init__()
        self.linear = nn.Linear(hidden, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float())


class Critic(nn.Module):
    """A separate value model: a transformer body (a copy of the policy, or the reward model's)
    plus a value head."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body
        self.head = ValueHead(body.config.hidden_size)

    def forward(self, prompt_ids, prompt_mask, response_ids, response_mask_) -> torch.Tensor:
        ids = torch.cat([prompt_ids, response_ids], dim=1)
        mask = torch.cat([prompt_mask, response_mask_], dim=1)
        out = self.body(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), output_hidden_states=True,
                        use_cache=False)
        p = prompt_ids.shape[1]
        return self.head(out.hidden_states[-1][:, p - 1 : -1]).squeeze(-1)
