"""Reward ensembles: K linear heads on one frozen backbone, or independently trained reward models.

The frozen-backbone construction ("Uncertainty-aware RLHF"): the backbone runs once per text and
its pooled features are cached; K heads (hidden → 1), each with its own initialisation and data
order, train together on the summed Bradley–Terry loss. A directory holds ``heads.safetensors``
(head weights plus the feature standardisation) and ``rlhfkit.json`` naming the backbone and its
pooling. ``--members`` directories instead list reward models trained separately (Secrets II).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .. import __version__
from ..io import UsageError
from ..models import check_reward_dir, is_encoder, load_model, load_tokenizer, write_meta
from ..records import Example
from ..rewards.losses import pair_loss
from ..rewards.model import capture_head_input, encode, head_linear, last_token_index, length_sorted_batches, render

POOLINGS = ("mean", "cls", "last", "head")


def default_pooling(model_or_config, from_reward_model: bool = False) -> str:
    """A reward model's backbone: exactly what its own head reads ("head"); other encoders: the mean
    over tokens (what sentence encoders such as MiniLM are trained for); decoders: the last token."""
    if from_reward_model:
        return "head"
    return "mean" if is_encoder(model_or_config) else "last"


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        return hidden[torch.arange(len(hidden), device=hidden.device), last_token_index(mask)]
    raise UsageError(f"--pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")


class Backbone:
    """A frozen model that turns (prompt, response) texts into pooled feature vectors."""

    def __init__(self, name: str, pooling: str | None = None, max_length: int = 512, device: str | None = None,
                 from_reward_model: bool = False, dtype: Any = None):
        self.name = name
        self.tokenizer = load_tokenizer(name)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.pooling = pooling or ("head" if from_reward_model else None)
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise UsageError(f"--pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.pooling == "head":  # the reward model itself; its head's input is captured on each forward
            self.model = load_model(name, "reward", dtype=dtype).to(self.device).eval()
            self._head_input = capture_head_input(self.model)
        else:
            self.model = load_model(name, "base", dtype=dtype).to(self.device).eval()
            self.pooling = self.pooling or default_pooling(self.model)
        self.max_length = max_length

    @property
    def hidden_size(self) -> int:
        return head_linear(self.model).in_features if self.pooling == "head" else self.model.config.hidden_size

    def _pooled(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling != "head":
            return pool(self.model(input_ids=ids, attention_mask=mask).last_hidden_state, mask, self.pooling)
        self.model(input_ids=ids, attention_mask=mask)
        x = self._head_input.pop("x")
        return pool(x, mask, "last") if x.dim() == 3 else x  # decoders score every position, read the last

    def texts(self, prompts: Sequence[Any], responses: Sequence[Any]) -> list[str]:
        return [render(self.tokenizer, p, r) for p, r in zip(prompts, responses)]

    @torch.inference_mode()
    def features(self, texts: Sequence[str], batch_size: int = 32, progress=None) -> torch.Tensor:
        """N x hidden features, computed in length-sorted batches (little padding)."""
        seqs = encode(self.tokenizer, texts, self.max_length)
        out = torch.empty(len(seqs), self.hidden_size)
        for idx, ids, mask in length_sorted_batches(seqs, batch_size, self.tokenizer.pad_token_id, self.device):
            out[idx] = self._pooled(ids, mask).float().cpu()
            if progress is not None:
                progress(len(idx))
        return out


def cached_features(backbone: Backbone, texts: Sequence[str], cache_dir: str | None, batch_size: int = 32,
                    progress=None) -> torch.Tensor:
    """Features from the disk cache when this backbone/pooling/text list was seen before."""
    if not cache_dir:
        return backbone.features(texts, batch_size, progress)
    from safetensors.torch import load_file, save_file

    h = hashlib.sha256(f"{backbone.name}|{backbone.pooling}|{backbone.max_length}".encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    path = Path(cache_dir) / f"features-{h.hexdigest()[:20]}.safetensors"
    if path.exists():
        return load_file(str(path))["features"]
    feats = backbone.features(texts, batch_size, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"features": feats.contiguous()}, str(tmp))
    os.replace(tmp, path)
    return feats


class Heads(nn.Module):
    """K linear reward heads over standardised features: r_k(f) = w_k · (f − μ)/σ + b_k."""

    def __init__(self, k: int, hidden: int, seed: int = 0):
        super().__init__()
        bound = 1 / math.sqrt(hidden)
        weights = []
        for head in range(k):  # each head its own initialisation
            g = torch.Generator().manual_seed(seed * 1000 + head)
            weights.append((torch.rand(hidden, generator=g) * 2 - 1) * bound)
        self.weight = nn.Parameter(torch.stack(weights))
        self.bias = nn.Parameter(torch.zeros(k))
        self.register_buffer("feature_mean", torch.zeros(hidden))
        self.register_buffer("feature_std", torch.ones(hidden))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """N x hidden → N x K."""
        z = (features - self.feature_mean) / self.feature_std
        return z @ self.weight.T + self.bias


@dataclass
class HeadTraining:
    heads: int = 10
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    bootstrap: bool = False
    seed: int = 0


def train_heads(fc: torch.Tensor, fr: torch.Tensor, cfg: HeadTraining, margin: torch.Tensor | None = None,
                label: torch.Tensor | None = None, log=None) -> Heads:
    """Train K heads on cached chosen/rejected features with the summed loss Σ_k ℓ(θ_k).

    Every head walks the data in its own order (its own bootstrap sample with ``bootstrap``), so
    heads differ by initialisation and data order, as in the paper.
    """
    n, hidden = fc.shape
    k = cfg.heads
    heads = Heads(k, hidden, cfg.seed)
    both = torch.cat([fc, fr])
    heads.feature_mean.copy_(both.mean(0))
    heads.feature_std.copy_(both.std(0).clamp(min=1e-6))
    margin = torch.zeros(n) if margin is None else margin
    label = torch.ones(n) if label is None else label
    optimizer = torch.optim.Adam(heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # one random stream per head: head h's data order depends on (seed, h) only, so head h of a
    # K-head ensemble is the same head a 1-head run with that stream would train
    streams = [torch.Generator().manual_seed(cfg.seed * 1000 + h + 1) for h in range(k)]
    samples = torch.stack([torch.randint(n, (n,), generator=streams[h]) if cfg.bootstrap else torch.arange(n)
                           for h in range(k)])
    for epoch in range(cfg.epochs):
        order = torch.stack([samples[h][torch.randperm(n, generator=streams[h])] for h in range(k)])  # K x N
        total = 0.0
        for s in range(0, n, cfg.batch_size):
            idx = order[:, s : s + cfg.batch_size]  # K x B: each head its own batch
            zc = (fc[idx] - heads.feature_mean) / heads.feature_std  # K x B x H
            zr = (fr[idx] - heads.feature_mean) / heads.feature_std
            w = heads.weight.unsqueeze(1)  # K x 1 x H
            delta = ((zc - zr) * w).sum(-1)  # biases cancel in a difference
            loss = pair_loss(delta, margin[idx], label[idx]).mean(dim=1).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * idx.shape[1]
        if log is not None:
            log({"epoch": epoch + 1, "loss_per_head": total / n / k})
    return heads


def save_ensemble(directory: str, heads: Heads, backbone: Backbone, meta: dict) -> None:
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in heads.state_dict().items()}
    tmp = d / ".heads.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, d / "heads.safetensors")
    write_meta(directory, {"type": "ensemble", "rlhfkit_version": __version__, "backbone": backbone.name,
                           "pooling": backbone.pooling, "max_length": backbone.max_length,
                           "heads": heads.weight.shape[0], **meta})


def save_members(directory: str, members: Sequence[str]) -> None:
    for m in members:
        check_reward_dir(m)
    Path(directory).mkdir(parents=True, exist_ok=True)
    write_meta(directory, {"type": "ensemble", "rlhfkit_version": __version__,
                           "members": [os.path.abspath(m) for m in members], "heads": len(members)})


def build_ensemble(examples: Sequence[Example], out: str, model: str = "minilm", cfg: HeadTraining | None = None,
                   from_rm: str | None = None, pooling: str | None = None, max_length: int = 512,
                   cache_dir: str | None = None, batch_size: int = 32, progress: bool = True) -> tuple[dict, torch.Tensor]:
    """Extract features once, train K heads on them, save.

    Returns a summary and the 2N x K rewards of the training texts (chosen first, then rejected),
    so a caller that scores the same data needs no second backbone pass.
    """
    from ..progress import task_progress
    from ..rewards.data import fingerprint

    cfg = cfg or HeadTraining()
    if cfg.heads < 1:
        raise UsageError(f"--heads must be at least 1, got {cfg.heads}")
    backbone = Backbone(from_rm or model, pooling, max_length, from_reward_model=from_rm is not None)
    texts = backbone.texts([e.prompt for e in examples], [e.chosen for e in examples]) + \
        backbone.texts([e.prompt for e in examples], [e.rejected for e in examples])
    with task_progress("features", len(texts), enabled=progress) as advance:
        feats = cached_features(backbone, texts, cache_dir, batch_size, advance)
    n = len(examples)
    margin = torch.tensor([e.margin or 0.0 for e in examples])
    label = torch.tensor([e.label for e in examples])
    history: list[dict] = []
    heads = train_heads(feats[:n], feats[n:], cfg, margin, label, log=history.append)
    with torch.no_grad():
        r = heads(feats)
        train_acc = (r[:n] > r[n:]).float().mean(0)
    save_ensemble(out, heads, backbone, {"from_rm": from_rm, "training": vars(cfg), "data_fingerprint": fingerprint(examples),
                                         "n_train": n, "history": history})
    info = {"heads": cfg.heads, "final_loss_per_head": history[-1]["loss_per_head"] if history else None,
            "train_accuracy_per_head": [round(a, 4) for a in train_acc.tolist()]}
    return info, r
