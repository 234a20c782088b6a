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
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

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


def run_fingerprint(examples: Sequence[Example], cfg: CrossFit) -> str:
    """A hash of everything the fold models' margins depend on: the settings and, per pair in order,
    what training and scoring read (texts, label, margin)."""
    content = {"settings": dataclasses.asdict(cfg),
               "pairs": [[ex.prompt, ex.chosen, ex.rejected, ex.label, ex.margin] for ex in examples]}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


class FoldStore:
    """Finished folds on disk: DIR/crossfit.json names the run (``run_fingerprint``) and
    DIR/round-R-fold-K.json holds one fold's held-out pairs and margins, written atomically once
    the fold is scored. ``resume`` reads the folds a stopped run finished and refuses a directory
    of another run (other pairs or settings); without it the run starts over, replacing them."""

    def __init__(self, directory: str, examples: Sequence[Example], cfg: CrossFit, resume: bool = False):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fingerprint = run_fingerprint(examples, cfg)
        for partial in self.dir.glob("*.json.tmp*"):  # a write a kill cut short; its fold is trained again
            partial.unlink()
        manifest = self.dir / "crossfit.json"
        if resume and manifest.exists():
            if json.loads(manifest.read_text()).get("fingerprint") != self.fingerprint:
                raise ValueError(f"--work-dir {directory}: holds the folds of another cross-fitting (other pairs "
                                 "or settings); give the same inputs and flags to resume, or drop --resume")
            return
        for old in self.dir.glob("round-*-fold-*.json"):
            old.unlink()
        self._write(manifest, {"fingerprint": self.fingerprint, "pairs": len(examples),
                               "settings": dataclasses.asdict(cfg)})

    def _write(self, path: Path, obj: dict) -> None:
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(obj))
        os.replace(tmp, path)

    def _path(self, r: int, k: int) -> Path:
        return self.dir / f"round-{r}-fold-{k}.json"

    def load(self, r: int, k: int, held: list[int]) -> list[float] | None:
        """The fold's saved margins, or None when it has not finished."""
        path = self._path(r, k)
        if not path.exists():
            return None
        saved = json.loads(path.read_text())
        if saved.get("fingerprint") != self.fingerprint or saved.get("held") != held:
            raise ValueError(f"{path}: written by another cross-fitting; remove it or give an empty --work-dir")
        return saved["margins"]

    def save(self, r: int, k: int, held: list[int], margins: list[float]) -> None:
        self._write(self._path(r, k), {"fingerprint": self.fingerprint, "held": held, "margins": margins})


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
            held_margins = store.load(r, k, held) if store is not None else None
            if held_margins is None:
                train = [ex for i, ex in enumerate(train_view) if fold[i] != k]
                tcfg = TrainConfig(model=cfg.model, out=None, lr=cfg.lr, batch_size=cfg.batch_size, epochs=cfg.epochs,
                                   max_length=cfg.max_length, warmup_ratio=0.1, save_steps=0, logging_steps=10**9,
                                   seed=cfg.seed * 7 + 1000 * r + k)
                fitted = fit_reward_model(tcfg, train, progress=False)
                held_margins = [float(x) for x in margins_of(fitted, [examples[i] for i in held], cfg.max_length)]
                del fitted
                if store is not None:
                    store.save(r, k, held, held_margins)
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
