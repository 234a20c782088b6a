"""What PPO optimises: a reward-model directory, an ensemble (one head or the mean), or a Python function."""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..io import UsageError
from ..records import as_text


class RewardSource:
    """Call with prompts and responses; returns (scores, σ) where σ is the ensemble's std or None."""

    is_ensemble = False

    def __call__(self, prompts: Sequence[Any], responses: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError


class ModelReward(RewardSource):
    def __init__(self, directory: str, head: int | None = None, max_length: int | None = None, normalize: bool = False,
                 dtype=None, device=None):
        from ..cleaning.scoring import load_scorer

        self.scorer = load_scorer(directory, max_length=max_length, dtype=dtype,
                                  device=str(device) if device is not None else None)
        self.is_ensemble = self.scorer.heads > 1
        if head is not None and not 0 <= head < self.scorer.heads:
            raise UsageError(f"--reward-head {head}: {directory} has {self.scorer.heads} head(s)")
        self.head = head
        meta = getattr(self.scorer, "meta", {}) or {}
        self.shift, self.scale = (meta.get("reward_mean", 0.0), meta.get("reward_std", 1.0) or 1.0) if normalize else (0.0, 1.0)

    def __call__(self, prompts, responses):
        rewards = self.scorer.score(prompts, responses)
        score = rewards[:, self.head] if self.head is not None else rewards.mean(dim=1)
        sigma = rewards.std(dim=1) if rewards.shape[1] > 1 else None
        return (score - self.shift) / self.scale, sigma


class FunctionReward(RewardSource):
    """``module:function`` or ``path/to/file.py:function``, called as f(prompt, response) -> float."""

    def __init__(self, spec: str):
        module_name, _, fn_name = spec.rpartition(":")
        try:
            if module_name.endswith(".py"):
                if not os.path.exists(module_name):
                    raise ImportError(f"no file {module_name}")
                loader_spec = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
                module = importlib.util.module_from_spec(loader_spec)
                loader_spec.loader.exec_module(module)
            else:
                module = importlib.import_module(module_name)
            self.fn: Callable[[str, str], float] = getattr(module, fn_name)
        except (ImportError, AttributeError) as e:
            raise UsageError(f"--reward {spec!r}: cannot import the function ({e})") from None
        if not callable(self.fn):
            raise UsageError(f"--reward {spec!r}: {fn_name} is not callable")

    def __call__(self, prompts, responses):
        scores = [float(self.fn(as_text(p), r)) for p, r in zip(prompts, responses)]
        return torch.tensor(scores), None


def load_reward(spec: str, head: int | None = None, max_length: int | None = None,
                normalize: bool = False, dtype=None, device=None) -> RewardSource:
    if os.path.isdir(spec):
        return ModelReward(spec, head, max_length, normalize, dtype, device)
    if ":" in spec:
        return FunctionReward(spec)
    raise UsageError(f"--reward {spec!r}: not a reward-model or ensemble directory, nor module:function")
