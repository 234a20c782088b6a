"""Scoring (prompt, response) pairs with a reward model or ensemble directory.

Ensembles are built in ``rlhfkit.cleaning.ensemble``; they are read here. ``load_scorer`` returns an object whose ``score`` gives an N x K tensor: K = 1 for a reward model,
K heads for an ensemble, so every stage that reads rewards treats both alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from .ensemble import Backbone, Heads
from ..models import META_FILE, ModelError, check_reward_dir, load_model, load_tokenizer, read_meta
from ..rewards.model import RewardModel, encode, render, score_sequences


class RewardModelScorer:
    """A single reward model: one reward per (prompt, response)."""

    heads = 1

    def __init__(self, directory: str, device: str | None = None, max_length: int | None = None, dtype: Any = None):
        check_reward_dir(directory)
        self.directory = directory
        self.meta = read_meta(directory)
        self.tokenizer = load_tokenizer(directory)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = RewardModel(load_model(directory, "reward", dtype=dtype)).to(self.device).eval()
        # the length the model was trained at, unless the caller overrides it
        self.max_length = max_length or saved_max_length(self.meta)

    def score(self, prompts: Sequence[Any], responses: Sequence[Any], batch_size: int = 32, progress=None) -> torch.Tensor:
        texts = [render(self.tokenizer, p, r) for p, r in zip(prompts, responses)]
        seqs = encode(self.tokenizer, texts, self.max_length)
        rewards = score_sequences(self.model, seqs, self.tokenizer.pad_token_id, batch_size, self.device, progress)
        return torch.tensor(rewards).unsqueeze(1)


DEFAULT_MAX_LENGTH = 512


def saved_max_length(meta: dict) -> int:
    """The max_length a reward model or ensemble recorded in rlhfkit.json (512 for other models)."""
    return int(meta.get("max_length") or (meta.get("config") or {}).get("max_length") or DEFAULT_MAX_LENGTH)


class EnsembleScorer:
    """Scores with every head (or member); ``score`` returns N x K."""

    def __init__(self, directory: str, device: str | None = None, max_length: int | None = None, dtype: Any = None,
                 one_at_a_time: bool = False, **_: Any):
        meta = read_meta(directory)
        if meta.get("type") != "ensemble":
            raise ModelError(f"{directory!r} is not an ensemble directory (rlhfkit.json type is {meta.get('type')!r})")
        self.meta = meta
        self.member_dirs = meta.get("members")
        if self.member_dirs is not None:
            # one pass over data (score, strength, metrics): load each member when its turn comes and free
            # it after, so ten 7B members need one model's memory; repeated scoring (ppo) keeps them loaded
            self.member_kwargs = dict(device=device, max_length=max_length, dtype=dtype)
            for m in self.member_dirs:
                check_reward_dir(m)
            self.loaded = None if one_at_a_time else [RewardModelScorer(m, **self.member_kwargs) for m in self.member_dirs]
            self.heads = len(self.member_dirs)
            # Bradley–Terry fixes each member's rewards only up to a constant: centred on the mean reward
            # of its own training data, the members' spread is their disagreement, not their offsets
            means = [read_meta(m).get("reward_mean") for m in self.member_dirs]
            self.offsets = [float(x) for x in means] if all(x is not None for x in means) else [0.0] * len(means)
            if any(x is None for x in means) and any(x is not None for x in means):
                import sys

                print(f"{directory}: some members record no training mean reward (not trained by rlhfkit "
                      "train-rm): no member is centred, so their spread includes their offsets", file=sys.stderr)
            return
        from safetensors.torch import load_file

        state = load_file(str(Path(directory) / "heads.safetensors"))
        self.backbone = Backbone(meta["backbone"], meta["pooling"], max_length or meta.get("max_length", 512), device,
                                 from_reward_model=meta.get("from_rm") is not None, dtype=dtype)
        k, hidden = state["weight"].shape
        self.heads_module = Heads(k, hidden)
        self.heads_module.load_state_dict(state)
        self.heads = k

    def score(self, prompts: Sequence[Any], responses: Sequence[Any], batch_size: int = 32, progress=None) -> torch.Tensor:
        if self.member_dirs is not None:
            columns = []
            for k, directory in enumerate(self.member_dirs):
                member = self.loaded[k] if self.loaded is not None else RewardModelScorer(directory, **self.member_kwargs)
                columns.append(member.score(prompts, responses, batch_size, progress) - self.offsets[k])
                del member  # one at a time: freed before the next one loads
            return torch.cat(columns, dim=1)
        feats = self.backbone.features(self.backbone.texts(prompts, responses), batch_size, progress)
        with torch.no_grad():
            return self.heads_module(feats)


def load_scorer(spec: str, **kwargs: Any):
    """A reward model or ensemble directory → a scorer (``dtype``: a torch dtype or a --dtype name)."""
    if isinstance(kwargs.get("dtype"), str):
        from ..models import resolve_dtype

        kwargs["dtype"] = resolve_dtype(kwargs["dtype"], kwargs.get("device"))
    one_at_a_time = kwargs.pop("one_at_a_time", False)  # ensembles of members: see EnsembleScorer
    path = Path(spec)
    kind = read_meta(spec).get("type") if (path / META_FILE).exists() else None
    if kind == "ensemble":
        return EnsembleScorer(spec, one_at_a_time=one_at_a_time, **kwargs)
    if kind not in (None, "reward-model"):
        raise ModelError(f"{spec!r} is a {kind} directory, not a reward model or ensemble")
    return RewardModelScorer(spec, **kwargs)


def _fields(rewards: torch.Tensor, suffix: str = "") -> dict:
    """One response's fields: the reward, and for ensembles the per-head list and spread."""
    if rewards.numel() == 1:
        return {f"reward{suffix}": rewards.item()}
    return {
        f"reward{suffix}": rewards.mean().item(),
        f"rewards{suffix}": rewards.tolist(),
        f"reward_mean{suffix}": rewards.mean().item(),
        f"reward_std{suffix}": rewards.std().item(),  # sample std over heads
    }


def score_examples(scorer, examples: Sequence, batch_size: int = 32) -> list[dict]:
    """Score every response of every record in one batched pass; return the output records."""
    from ..progress import task_progress

    prompts, responses, owners = [], [], []
    for k, ex in enumerate(examples):
        if ex.kind == "generation":
            items = [ex.response]
        elif ex.kind == "pair":
            items = [ex.chosen, ex.rejected]
        else:
            items = ex.given_responses  # the record's own order, for the output
        for item in items:
            prompts.append(ex.prompt)
            responses.append(item)
            owners.append(k)
    with task_progress("score", len(responses)) as advance:
        all_rewards = scorer.score(prompts, responses, batch_size, progress=advance)
    out, pos = [], 0
    for ex in examples:
        if ex.kind == "generation":
            out.append(ex.output(**_fields(all_rewards[pos])))
            pos += 1
        elif ex.kind == "pair":
            out.append(ex.output(**_fields(all_rewards[pos], "_chosen"), **_fields(all_rewards[pos + 1], "_rejected")))
            pos += 2
        else:
            n = len(ex.given_responses)
            out.append(ex.output(response_rewards=all_rewards[pos : pos + n].mean(dim=1).tolist()))
            pos += n
    return out
