"""Policy-side pieces: prompt rendering, batched generation, per-token log-probs and values."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Sequence

import torch
from torch import nn

from ..dist import ShardedByLayer
from ..models import compute_autocast
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


def response_mask(response_ids: torch.Tensor, eos_ids: int | Sequence[int] | None) -> torch.Tensor:
    """1 up to and including the first end-of-sequence token (any of ``eos_ids``) of each response, 0 after it."""
    if eos_ids is None:
        return torch.ones_like(response_ids)
    eos = torch.as_tensor([eos_ids] if isinstance(eos_ids, int) else list(eos_ids), device=response_ids.device)
    is_eos = torch.isin(response_ids, eos)
    after = (is_eos.cumsum(-1) - is_eos.long()) > 0  # strictly after the first EOS
    return (~after).long()


def eos_ids(policy: nn.Module, tokenizer) -> list[int]:
    """Every token that ends a response: the tokenizer's EOS and whatever the model's generation_config
    declares (Llama-3: end-of-turn and end-of-text), without duplicates."""
    declared = getattr(getattr(policy, "generation_config", None), "eos_token_id", None)
    declared = [] if declared is None else ([declared] if isinstance(declared, int) else list(declared))
    ids = ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []) + declared
    return list(dict.fromkeys(ids))


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


@contextmanager
def own_generation_config(policy: nn.Module, config):
    """Generate with ``config`` alone: transformers fills what a passed config leaves at its default
    from the model's own generation_config (a repetition_penalty of 1.0 reads as "unset"), so the
    model's (and a LoRA wrapper's base model's) config is swapped out for the call."""
    from transformers import GenerationConfig

    holders = [m for m in policy.modules() if isinstance(getattr(m, "generation_config", None), GenerationConfig)]
    saved = [m.generation_config for m in holders]
    for m in holders:
        m.generation_config = config
    try:
        yield
    finally:
        for m, c in zip(holders, saved):
            m.generation_config = c


@torch.no_grad()
def generate(policy: nn.Module, tokenizer, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int,
             temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False,
             row_seeds: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample responses with the model's KV cache; returns (response ids, response mask).

    This is the rollout engine's one entry point: an inference server (vLLM, SGLang) would replace
    this function. With ``row_seeds``, every row samples from its own stream (``RowSampler``)."""
    from transformers import GenerationConfig, LogitsProcessorList

    eos = eos_ids(policy, tokenizer)
    # a fresh config, not the model's: its repetition_penalty, suppress_tokens, min_length, ... would
    # reshape the distribution the log-probs (softmax of logits / T) say the tokens were drawn from
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if not (greedy or row_seeds is not None) \
        else dict(do_sample=False)
    config = GenerationConfig(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=eos or None, use_cache=True, **sampling)
    processors = LogitsProcessorList([RowSampler(row_seeds, temperature, top_p)]) if row_seeds is not None and not greedy \
        else None
    # synced_gpus off: transformers turns it on whenever a ZeRO-3 config is alive (accelerate always
    # registers one), which runs a collective per token and keeps finished ranks decoding; the rollout
    # has gathered the whole weights first (dist.full_parameters), so no rank needs another's
    with own_generation_config(policy, config):
        out = policy.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config,
                              logits_processor=processors, synced_gpus=False)
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
                     value_head: nn.Module | None = None, with_entropy: bool = False, value_trains_body: bool = False):
    """Log-probs of the response tokens (and values, entropy) from one forward pass over prompt+response."""
    ids = torch.cat([prompt_ids, response_ids], dim=1)
    mask = torch.cat([prompt_mask, response_mask_], dim=1)
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                output_hidden_states=value_head is not None, use_cache=False)
    p = prompt_ids.shape[1]
    logp, entropy = token_stats(out.logits[:, p - 1 : -1], response_ids, temperature, with_entropy)  # t predicts t+1
    # the shared value head reads the policy's features but does not train them: a critic far from its
    # returns (a value loss of thousands after a sudden KL spike) would otherwise rewrite the language
    # model through its gradient, which raises the KL further (the collapse in docs/results.md §5.5)
    features = out.hidden_states[-1][:, p - 1 : -1] if value_head is not None else None
    if features is not None and not value_trains_body:
        features = features.detach()
    values = value_head(features).squeeze(-1).float() if value_head is not None else None
    return logp, values, entropy


class ActorCritic(ShardedByLayer, nn.Module):
    """The policy and (shared critic) its value head as one module, so that one DDP/FSDP/DeepSpeed
    wrapper sees every trainable weight; ``forward`` gives per-response-token log-probs, values and
    entropy, computed in ``compute_dtype`` (autocast entered here, so no engine can switch it off)."""

    def __init__(self, policy: nn.Module, value_head: nn.Module | None = None, compute_dtype=torch.float32,
                 value_trains_body: bool = False):
        super().__init__()
        self.policy = policy
        self.value_head = value_head
        self.compute_dtype = compute_dtype
        self.value_trains_body = value_trains_body

    def forward(self, prompt_ids, prompt_mask, response_ids, response_mask_, temperature: float = 1.0,
                with_entropy: bool = False):
        with compute_autocast(prompt_ids.device.type, self.compute_dtype):
            return forward_response(self.policy, prompt_ids, prompt_mask, response_ids, response_mask_, temperature,
                                    self.value_head, with_entropy, self.value_trains_body)


class ValueHead(nn.Module):
    """A scalar value per position, read from the policy's (or critic's) last hidden state."""

    def __init__(self, hidden: int):
        super().__init__()
        self.linear = nn.Linear(hidden, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float())


class Critic(ShardedByLayer, nn.Module):
    """A separate value model: a transformer body (a copy of the policy, or the reward model's)
    plus a value head."""

    def __init__(self, body: nn.Module, compute_dtype=torch.float32):
        super().__init__()
        self.body = body
        self.head = ValueHead(body.config.hidden_size)
        self.compute_dtype = compute_dtype

    def forward(self, prompt_ids, prompt_mask, response_ids, response_mask_) -> torch.Tensor:
        ids = torch.cat([prompt_ids, response_ids], dim=1)
        mask = torch.cat([prompt_mask, response_mask_], dim=1)
        with compute_autocast(ids.device.type, self.compute_dtype):
            out = self.body(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                            output_hidden_states=True, use_cache=False)
        p = prompt_ids.shape[1]
        return self.head(out.hidden_states[-1][:, p - 1 : -1]).squeeze(-1)


def add_policy_lora(policy, cfg):
    """peft adapters on every linear layer of the policy, trained in fp32 over its (frozen) base."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        from ..io import UsageError

        raise UsageError("--lora needs the 'peft' package: pip install 'rlhfkit[lora]'") from None
    config = LoraConfig(task_type="CAUSAL_LM", r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                        target_modules="all-linear")
    model = get_peft_model(policy, config, autocast_adapter_dtype=True)
    for p in model.parameters():  # trainable weights are fp32 masters whatever the base's dtype
        if p.requires_grad:
            p.data = p.data.float()
    return model
