"""Out-of-sample preference strength by cross-fitting: no pair is scored by a model that trained on it.

The pairs are split into k folds; for each fold a reward model is fine-tuned on the other folds
and scores the held-out fold. Models that vote on their own training data (the paper's in-sample
construction) make systematic errors that look like confidence; held-out scores do not.

With ``rounds`` > 1, each later round trains its fold models on labels corrected by the previous
round (pairs whose label is more likely wrong than right, ``noise.p_wrong`` ≥ 0.5, are flipped for
training only), on a fresh fold split. Every round still scores each pair with a model that never
trained on that pair; the corrections it learnt from were decided by earlier models that may have
(a second-order leak, documented).

The spread: a fold model alone gives one margin per pair, whose std is 0. So each fold also refits
its own head ``heads`` times, each time on a bootstrap resample of the fold's training pairs, on the
features that head reads (computed once per text), and every refit scores the held-out fold. Each
refit starts from the fold model's head and is solved to convergence (L-BFGS) under a ridge that
pulls it towards that head (``head_l2``, in standardised feature units). The objective is strictly
convex, so a refit's end does not depend on its start: the heads differ only by the pairs their
resample drew, and a pair's std measures how much its margin moves when the training pairs are
redrawn, not initialisation noise (``resample=False`` gives K identical heads and std 0). It is the
spread of a regularised refit anchored at a head fitted on all the fold's pairs, so its size depends
on the ridge (median 0.41 at 0.1, 0.09 at 10 on synth): a relative measure across pairs, not a
calibrated standard error. A pair's members are those K refits per
round: all out of sample, their mean the strength. The extra cost is one inference pass over the
training texts per fold (about a tenth of the fold's fine-tuning). ``heads=0`` keeps the fold
model's own margin (one member per round).

With a ``FoldStore`` every finished fold's margins are kept on disk, so a run that was stopped
resumes at the first unfinished fold and ends with the margins an uninterrupted run gives (each
fold model's training is seeded on its own, and later rounds read only earlier margins).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..io import UsageError, write_json_atomic
from .noise import p_wrong
from ..records import Example


HEAD_L2 = 10.0  # the smallest ridge keeping the fold models' ranking and scale (benchmarks/strength_refit.py, synth seed 0)


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
    heads: int = 10  # bootstrap refits of the fold model's head per fold (0: the fold model's own margin, std 0)
    head_l2: float = HEAD_L2  # the refits' ridge towards the fold model's head
    resample: bool = True  # False: every refit sees the fold's pairs as they are (std 0; for tests)
    dtype: str = "auto"  # the fold models' compute precision (train-rm's --dtype)

    @property
    def members(self) -> int:
        """Margins per pair: K heads (or the fold model) in every round."""
        return max(self.heads, 1) * self.rounds


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


def rewards_and_features(fitted, examples: Sequence[Example], max_length: int,
                         batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The trained reward model's rewards (2N, chosen first) and the features its head reads
    (2N x hidden) for every text of ``examples``, in one inference pass."""
    from ..rewards.model import encode, render
    from ..rewards.model import rewards_and_features as of_sequences

    tok = fitted.tokenizer
    texts = [render(tok, e.prompt, e.chosen) for e in examples] + [render(tok, e.prompt, e.rejected) for e in examples]
    return of_sequences(fitted.rm, encode(tok, texts, max_length), tok.pad_token_id, batch_size)


def bootstrap_counts(n: int, k: int, seed: int, resample: bool = True) -> torch.Tensor:
    """K x n: how often each of n pairs is drawn in each of K bootstrap resamples (each resample its
    own random stream), or all ones without resampling."""
    if not resample:
        return torch.ones(k, n, dtype=torch.float64)
    draws = [torch.randint(n, (n,), generator=torch.Generator().manual_seed(seed * 1000 + h + 1)) for h in range(k)]
    return torch.stack([torch.bincount(d, minlength=n) for d in draws]).double()


def refit_heads(chosen: torch.Tensor, rejected: torch.Tensor, start: torch.Tensor, counts: torch.Tensor, l2: float,
                margin: torch.Tensor | None = None, label: torch.Tensor | None = None,
                init: torch.Tensor | None = None, max_iter: int = 500) -> tuple[torch.Tensor, float]:
    """K head weights (K x hidden, in the features' own units) minimising, each for its own row of
    ``counts``, the count-weighted mean pair loss plus (l2 / 2)·|w − start|² in standardised units
    (each feature divided by its std over all texts), beginning at ``start`` (or at ``init``, K x
    hidden). The problem is strictly convex, so L-BFGS reaches the same optimum from any beginning;
    returns the weights and the largest |gradient| left."""
    from ..rewards.losses import pair_loss

    scale = torch.cat([chosen, rejected]).double().std(0).clamp(min=1e-6)
    z = (chosen.double() - rejected.double()) / scale  # n x hidden; biases and feature means cancel
    anchor = start.double().reshape(-1) * scale
    w = (anchor.repeat(counts.shape[0], 1) if init is None else init.double() * scale).requires_grad_()
    n = z.shape[0]
    margin = None if margin is None else margin.double()
    label = None if label is None else label.double()

    def objective() -> torch.Tensor:
        loss = (counts * pair_loss(w @ z.T, margin, label)).sum(1) / n + l2 / 2 * ((w - anchor) ** 2).sum(1)
        return loss.sum()  # the heads' problems are separate: one sum, K independent gradients

    optimizer = torch.optim.LBFGS([w], lr=1, max_iter=max_iter, history_size=20, tolerance_grad=1e-10,
                                  tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    optimizer.step(closure)
    optimizer.zero_grad()
    objective().backward()
    return (w.detach() / scale).float(), float(w.grad.abs().max())


def head_weights(fitted) -> torch.Tensor:
    """The weights (hidden) of the fold model's head over the features ``rewards_and_features`` gives."""
    from ..rewards.model import head_linear

    return head_linear(fitted.rm.hf).weight.detach().float().reshape(-1).cpu()


REFIT_TOLERANCE = 1e-4  # the largest |gradient| a converged refit leaves (about 1e-8 at MiniLM scale)


def spread_margins(fitted, train: Sequence[Example], held_features: torch.Tensor, cfg: CrossFit,
                   seed: int) -> torch.Tensor:
    """|held| x K margins of one fold's bootstrap refits of its fold model's head (``refit_heads``);
    ``held_features`` (chosen rows, then rejected) are only scored. Only ``train`` reaches the fitting."""
    n, h = len(train), len(held_features) // 2
    _, f_train = rewards_and_features(fitted, train, cfg.max_length)
    start = head_weights(fitted)
    weights, gradient_left = refit_heads(f_train[:n], f_train[n:], start, bootstrap_counts(n, cfg.heads, seed, cfg.resample),
                                         cfg.head_l2, margin=torch.tensor([e.margin or 0.0 for e in train]),
                                         label=torch.tensor([e.label for e in train]))
    if gradient_left > REFIT_TOLERANCE:  # an unconverged refit's spread would carry its optimiser's path again
        print(f"strength: a fold's head refits stopped short of their optimum (largest gradient left "
              f"{gradient_left:.1e} > {REFIT_TOLERANCE:.0e}); their std includes optimiser noise", file=sys.stderr)
    return (held_features[:h] - held_features[h:]) @ weights.T


class FoldStore:
    """Finished folds on disk: DIR/crossfit.json holds the run's identity (the settings and the data
    fingerprint, as train-rm's checkpoints do) and DIR/round-R-fold-K.json one fold's held-out
    margins, each written atomically once the fold is scored. ``resume`` reads the folds a stopped
    run finished and refuses a directory of another run, naming what differs; without it the run
    starts over, replacing them."""

    def __init__(self, directory: str, examples: Sequence[Example], cfg: CrossFit, resume: bool = False):
        from ..checkpoint import check_identity
        from ..rewards.data import fingerprint

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

    def load(self, r: int, k: int, size: int, members: int) -> list[list[float]] | None:
        """The fold's saved margins (``size`` rows of ``members``), or None when it has not finished."""
        path = self._path(r, k)
        if not path.exists():
            return None
        margins = json.loads(path.read_text())
        if len(margins) != size or any(not isinstance(row, list) or len(row) != members for row in margins):
            raise UsageError(f"{path}: does not hold {size} pairs x {members} margins, as the fold has: "
                             "remove it or start over without --resume")
        return margins

    def save(self, r: int, k: int, margins: list[list[float]]) -> None:
        write_json_atomic(str(self._path(r, k)), margins)


def cross_fit(examples: Sequence[Example], cfg: CrossFit, advance=None,
              store: FoldStore | None = None) -> tuple[torch.Tensor, list[list[int]], dict]:
    """N x members out-of-sample margins (round by round, K heads each), the fold of every pair in
    every round, and timing/info (``seconds_spread``: the part spent on the refits' features
    and fitting; ``fold_model_margins``: N x rounds margins of the fold models' own heads). With
    ``store``, folds it holds are read instead of trained, and each fold trained is saved."""
    from ..rewards.train import TrainConfig, fit_reward_model

    if cfg.folds < 2:
        raise ValueError("cross-fitting needs at least 2 folds")
    n = len(examples)
    if n < 2 * cfg.folds:
        raise ValueError(f"cross-fitting {n} pairs in {cfg.folds} folds leaves folds too small: "
                         f"give at least {2 * cfg.folds} pairs or fewer --folds")
    per_round = max(cfg.heads, 1)
    margins = torch.zeros(n, cfg.rounds * per_round, dtype=torch.float64)
    own = torch.full((n, cfg.rounds), float("nan"), dtype=torch.float64)  # the fold models' own margins
    folds_by_round: list[list[int]] = []
    flips = torch.zeros(n, dtype=torch.bool)  # training-only corrections from the previous round
    started = time.perf_counter()
    info: dict = {"corrected_for_training": [], "folds_reused": 0, "seconds_spread": 0.0}
    for r in range(cfg.rounds):
        fold = fold_assignment(n, cfg.folds, cfg.seed * 1000 + r)
        folds_by_round.append(fold)
        train_view = [swapped(ex) if flips[i] else ex for i, ex in enumerate(examples)]
        for k in range(cfg.folds):
            held = [i for i in range(n) if fold[i] == k]
            held_margins = store.load(r, k, len(held), per_round) if store is not None else None
            if held_margins is None:
                train = [ex for i, ex in enumerate(train_view) if fold[i] != k]
                seed = cfg.seed * 7 + 1000 * r + k
                tcfg = TrainConfig(model=cfg.model, out=None, lr=cfg.lr, batch_size=cfg.batch_size, epochs=cfg.epochs,
                                   max_length=cfg.max_length, warmup_ratio=0.1, save_steps=0, logging_steps=10**9,
                                   seed=seed, dtype=cfg.dtype)
                fitted = fit_reward_model(tcfg, train, progress=False)
                r_held, f_held = rewards_and_features(fitted, [examples[i] for i in held], cfg.max_length)
                own[held, r] = (r_held[:len(held)] - r_held[len(held):]).double()
                if cfg.heads:
                    spread_started = time.perf_counter()
                    held_margins = spread_margins(fitted, train, f_held, cfg, seed).tolist()
                    info["seconds_spread"] += time.perf_counter() - spread_started
                else:
                    held_margins = own[held, r:r + 1].tolist()
                del fitted
                if store is not None:
                    store.save(r, k, held_margins)
            else:
                info["folds_reused"] += 1
            margins[held, r * per_round:(r + 1) * per_round] = torch.tensor(held_margins, dtype=torch.float64)
            if advance is not None:
                advance(1, round=r + 1, fold=k + 1)
        if r + 1 < cfg.rounds:
            pw, _ = p_wrong(margins[:, r * per_round:(r + 1) * per_round].mean(1))
            flips = pw > 0.5  # more likely wrong than right (undecidable margins give every pair 0.5: none)
            info["corrected_for_training"].append(int(flips.sum()))
    info["seconds"] = round(time.perf_counter() - started, 1)
    info["seconds_spread"] = round(info["seconds_spread"], 1)
    info["fold_model_margins"] = own  # for comparison only (NaN for folds read from a store)
    return margins, folds_by_round, info
