"""Out-of-sample preference strength by cross-fitting: no pair is scored by a model that trained on it.

The pairs are split into k folds; for each fold a reward model is fine-tuned on the other folds
and scores the held-out fold. Models that vote on their own training data (the paper's in-sample
construction) make systematic errors that look like confidence; held-out scores do not.

With ``rounds`` > 1, each later round trains its fold models on labels corrected by the previous
round (pairs whose label is more likely wrong than right, ``noise.p_wrong`` ≥ 0.5, are flipped for
training only), on a fresh fold split. Every round still scores each pair with a model that never
trained on that pair; the corrections it learnt from were decided by earlier models that may have
(a second-order leak, documented). Each pair's margins, one per round, are its members.

With a ``FoldStore`` every finished fold's margins are kept on disk, so a run that was stopped
resumes at the first unfinished fold and ends with the margins an uninterrupted run gives (each
fold model's training is seeded on its own, and later rounds read only earlier margins).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .io import UsageError, write_json_atomic
from .noise import p_wrong
from .records import Example


@dataclass
class CrossFit:
    model: str = "minilm"
    folds: int = 3
    rounds: int = 1
    epochs: float = 3.0
    lr: float = 5e-5
    batch_size: int = 16
    max_length: int = 256
    seed: int = 0


def fold_assignment(n: int, folds: int, seed: int) -> list[int]:
    """Fold of each pair: a seeded shuffle dealt round-robin, so fold sizes differ by at most one."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    fold = [0] * n
    for position, i in enumerate(order):
        fold[i] = position % folds
    return fold


def swapped(ex: Example) -> Example:
    """The pair with chosen and rejected exchanged (a training-only correction)."""
    return dataclasses.replace(ex, chosen=ex.rejected, rejected=ex.chosen)


def margins_of(fitted, examples: Sequence[Example], max_length: int, batch_size: int = 32) -> list[float]:
    """r(chosen) − r(rejected) in the order the data gives, for a trained reward model in memory."""
    from .rewards.model import encode, render, score_sequences

    tok, rm = fitted.tokenizer, fitted.rm
    texts = [render(tok, e.prompt, e.chosen) for e in examples] + [render(tok, e.prompt, e.rejected) for e in examples]
    seqs = encode(tok, texts, max_length)
    r = score_sequences(rm, seqs, tok.pad_token_id, batch_size)
    n = len(examples)
    return [a - b for a, b in zip(r[:n], r[n:])]


class FoldStore:
    """Finished folds on disk: DIR/crossfit.json holds the run's identity (the settings and the data
    fingerprint, as train-rm's checkpoints do) and DIR/round-R-fold-K.json one fold's held-out
    margins, each written atomically once the fold is scored. ``resume`` reads the folds a stopped
    run finished and refuses a directory of another run, naming what differs; without it the run
    starts over, replacing them."""

    def __init__(self, directory: str, examples: Sequence[Example], cfg: CrossFit, resume: bool = False):
        from .checkpoint import check_identity
        from .rewards.data import fingerprint

        self.dir = Path(directory)
        self.identity = {**dataclasses.asdict(cfg), "data_fingerprint": fingerprint(examples)}
        manifest = self.dir / "crossfit.json"
        if resume and manifest.exists():
            check_identity(json.loads(manifest.read_text()), self.identity, self.dir)
            return
        for old in self.dir.glob("round-*-fold-*.json"):
            old.unlink()
        write_json_atomic(str(manifest), self.identity)

    def _path(self, r: int, k: int) -> Path:
        return self.dir / f"round-{r}-fold-{k}.json"

    def load(self, r: int, k: int, size: int) -> list[float] | None:
        """The fold's saved margins (``size`` of them), or None when it has not finished."""
        path = self._path(r, k)
        if not path.exists():
            return None
        margins = json.loads(path.read_text())
        if len(margins) != size:
            raise UsageError(f"{path}: holds {len(margins)} margins, the fold has {size} pairs: "
                             "remove it or start over without --resume")
        return margins

    def save(self, r: int, k: int, margins: list[float]) -> None:
        write_json_atomic(str(self._path(r, k)), margins)


def cross_fit(examples: Sequence[Example], cfg: CrossFit, advance=None,
              store: FoldStore | None = None) -> tuple[torch.Tensor, list[list[int]], dict]:
    """N x rounds out-of-sample margins, the fold of every pair in every round, and timing/info.
    With ``store``, folds it holds are read instead of trained, and each fold trained is saved."""
    from .rewards.train import TrainConfig, fit_reward_model

    if cfg.folds < 2:
        raise ValueError("cross-fitting needs at least 2 folds")
    n = len(examples)
    if n < 2 * cfg.folds:
        raise ValueError(f"cross-fitting {n} pairs in {cfg.folds} folds leaves folds too small: "
                         f"give at least {2 * cfg.folds} pairs or fewer --folds")
    margins = torch.zeros(n, cfg.rounds, dtype=torch.float64)
    folds_by_round: list[list[int]] = []
    flips = torch.zeros(n, dtype=torch.bool)  # training-only corrections from the previous round
    started = time.perf_counter()
    info: dict = {"corrected_for_training": [], "folds_reused": 0}
    for r in range(cfg.rounds):
        fold = fold_assignment(n, cfg.folds, cfg.seed * 1000 + r)
        folds_by_round.append(fold)
        train_view = [swapped(ex) if flips[i] else ex for i, ex in enumerate(examples)]
        for k in range(cfg.folds):
            held = [i for i in range(n) if fold[i] == k]
            held_margins = store.load(r, k, len(held)) if store is not None else None
            if held_margins is None:
                train = [ex for i, ex in enumerate(train_view) if fold[i] != k]
                tcfg = TrainConfig(model=cfg.model, out=None, lr=cfg.lr, batch_size=cfg.batch_size, epochs=cfg.epochs,
                                   max_length=cfg.max_length, warmup_ratio=0.1, save_steps=0, logging_steps=10**9,
                                   seed=cfg.seed * 7 + 1000 * r + k)
                fitted = fit_reward_model(tcfg, train, progress=False)
                held_margins = [float(x) for x in margins_of(fitted, [examples[i] for i in held], cfg.max_length)]
                del fitted
                if store is not None:
                    store.save(r, k, held_margins)
            else:
                info["folds_reused"] += 1
            margins[held, r] = torch.tensor(held_margins, dtype=torch.float64)
            if advance is not None:
                advance(1, round=r + 1, fold=k + 1)
        if r + 1 < cfg.rounds:
            pw, _ = p_wrong(margins[:, r])
            flips = pw > 0.5  # more likely wrong than right (undecidable margins give every pair 0.5: none)
            info["corrected_for_training"].append(int(flips.sum()))
    info["seconds"] = round(time.perf_counter() - started, 1)
    return margins, folds_by_round, info
