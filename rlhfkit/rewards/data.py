"""Turn records into token sequences and batches for reward-model training."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from ..io import InputError
from ..records import Example, ranking_pairs
from .losses import adaptive_utility
from .model import encode, render


@dataclass
class PairData:
    chosen: list[list[int]]
    rejected: list[list[int]]
    margin: torch.Tensor  # per pair, already scaled
    label: torch.Tensor  # probability that chosen is better, after smoothing

    def __len__(self) -> int:
        return len(self.chosen)

    def length(self, i: int) -> int:
        return len(self.chosen[i]) + len(self.rejected[i])


@dataclass
class RankingData:
    responses: list[list[list[int]]]  # per record, best first
    pairs: list[list[tuple[int, int]]]
    utilities: list[str]

    def __len__(self) -> int:
        return len(self.responses)

    def length(self, i: int) -> int:
        return sum(len(r) for r in self.responses[i])


@dataclass
class MetaData:
    """MetaRM's meta set: per prompt, k ≥ 2 responses sampled from the shifted policy."""

    responses: list[list[list[int]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.responses)


def pair_data(examples: Sequence[Example], tokenizer, max_length: int, margin_scale: float = 1.0,
              label_smoothing: float = 0.0) -> PairData:
    chosen = encode(tokenizer, [render(tokenizer, e.prompt, e.chosen) for e in examples], max_length)
    rejected = encode(tokenizer, [render(tokenizer, e.prompt, e.rejected) for e in examples], max_length)
    margin = torch.tensor([(e.margin or 0.0) * margin_scale for e in examples], dtype=torch.float32)
    p = torch.tensor([e.label for e in examples], dtype=torch.float32)
    label = p * (1 - label_smoothing) + (1 - p) * label_smoothing
    return PairData(chosen, rejected, margin, label)


def ranking_data(examples: Sequence[Example], tokenizer, max_length: int, utility: str, source: str,
                 open_utility: str = "x_inv", closed_utility: str = "x") -> RankingData:
    responses, pairs, utilities = [], [], []
    for e in examples:
        if utility == "adaptive":
            if e.open_ended is None:
                raise InputError(source, e.line, "field 'open_ended': missing, and --utility adaptive needs it")
            utilities.append(adaptive_utility(e.open_ended, open_utility, closed_utility))
        else:
            utilities.append(utility)
        responses.append(encode(tokenizer, [render(tokenizer, e.prompt, r) for r in e.responses], max_length))
        pairs.append(ranking_pairs(e))
    return RankingData(responses, pairs, utilities)


def meta_data(examples: Sequence[Example], tokenizer, max_length: int) -> MetaData:
    return MetaData([encode(tokenizer, [render(tokenizer, e.prompt, r) for r in e.responses], max_length)
                     for e in examples])


def epoch_order(n: int, seed: int, epoch: int, batch_size: int, lengths: Sequence[int] | None = None) -> list[list[int]]:
    """Batches of item indices for one epoch, a function of (seed, epoch) only, so a resumed run
    sees exactly the batches the interrupted one would have. With ``lengths``, items of similar
    length share a batch (sorted within mega-batches of 50 batches, then the batches shuffled)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    if lengths is not None:
        mega = 50 * batch_size
        perm = [i for s in range(0, n, mega) for i in sorted(perm[s : s + mega], key=lambda i: -lengths[i])]
    batches = [perm[s : s + batch_size] for s in range(0, n, batch_size)]
    if lengths is not None:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
    return batches


def sample_pairs(pairs: list[tuple[int, int]], max_pairs: int, g: torch.Generator) -> list[tuple[int, int]]:
    if len(pairs) <= max_pairs:
        return pairs
    keep = torch.randperm(len(pairs), generator=g)[:max_pairs].sort().values.tolist()
    return [pairs[i] for i in keep]


def fingerprint(examples: Sequence[Example]) -> str:
    """A hash of the training records' content in order (ids alone may be reused for other content),
    to tell which data built a model and whether a checkpoint belongs to this data."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps(e.raw, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]


def iter_chunks(seq: Sequence, size: int) -> Iterator[Sequence]:
    for s in range(0, len(seq), size):
        yield seq[s : s + size]
