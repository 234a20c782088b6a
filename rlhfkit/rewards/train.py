"""The reward-model training loop (accelerate underneath: one CPU, one GPU, or many).

Data order is a pure function of (seed, epoch), and checkpoints hold the model, optimizer,
scheduler and RNG states (tensors and JSON only, see ``rlhfkit.checkpoint``), so ``resume=True``
continues an interrupted run to the same weights, and refuses a checkpoint of another run.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .. import checkpoint as ckpt
from ..dist import ShardedByLayer, shards_parameters
from ..io import UsageError
from ..models import compute_autocast, load_model, load_tokenizer, resolve_dtype, set_dropout
from ..records import Example
from . import losses
from .data import (PairData, RankingData, epoch_order, meta_data, pair_data, ranking_data,
                   sample_pairs)
from .model import RewardModel, head_module, pad_batch, score_sequences
from .persist import Fitted, load_checkpoint, run_identity, save_checkpoint, save_reward_model

REWARD_STATS_WINDOW = 2000  # rewards kept from the last training forwards for reward_mean/std

CONTRASTIVE_DEFAULTS = {  # Secrets II §3.1: (weight, prototypes, temperature)
    ("simcse", "pair"): (1.0, None, 0.05), ("simcse", "diff"): (1.0, None, 0.05),
    ("swav", "pair"): (0.1, 50, 0.1), ("swav", "diff"): (0.5, 20, 0.1),
}


@dataclass
class TrainConfig:
    model: str
    out: str | None  # None: train only (no log, checkpoints or resume)
    loss: str = "bt"  # bt (pairs: margin and soft labels included) | ranking
    margin_scale: float = 1.0
    label_smoothing: float = 0.0
    noise_rate: float = 0.0  # > 0: train through random label flips at this rate
    noise_loss: str = "forward"  # forward (noisy-channel likelihood) | unbiased (Provably Robust DPO)
    utility: str = "x"
    open_utility: str = "x_inv"
    closed_utility: str = "x"
    max_pairs: int = 45
    contrastive: str | None = None  # simcse | swav
    contrastive_weight: float | None = None
    contrastive_features: str = "diff"
    contrastive_temperature: float | None = None
    prototypes: int | None = None
    dropout: float | None = None  # None: 0 (stable rewards), or 0.05 for contrastive views
    meta_lr: float = 1e-5
    meta_batch_size: int = 4
    freeze_backbone: bool = False
    early_stop_loss: float | None = None
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    scheduler: str = "cosine"
    max_length: int = 512
    group_by_length: bool = False
    eval_steps: int | None = None
    logging_steps: int = 10
    save_steps: int = 200
    save_total_limit: int = 2
    resume: bool = False
    seed: int = 0
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    dtype: str = "auto"



SCHEDULES = ("cosine", "linear", "constant_with_warmup", "constant")


def lr_factor(name: str, warmup: int, total: int):
    """The learning-rate multiplier at each optimizer step: a linear warmup over ``warmup`` steps, then
    a cosine or linear decay to 0 at ``total`` (or flat). The same curves as transformers'
    ``get_scheduler``, written here because importing that pulls in peft (2.5 s on its own; about
    0.6 s of a tiny train-rm run's start, where much of the rest is imported anyway)."""
    if name not in SCHEDULES:
        raise UsageError(f"--scheduler must be one of {', '.join(SCHEDULES)}, got {name!r}")

    def factor(step: int) -> float:
        if name == "constant":
            return 1.0
        if step < warmup:
            return step / max(1, warmup)
        if name == "constant_with_warmup":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if name == "linear":
            return max(0.0, 1.0 - progress)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return factor


def check_config(cfg: TrainConfig) -> None:
    lr_factor(cfg.scheduler, 0, 1)  # refuses an unknown --scheduler before anything loads
    if cfg.loss not in ("bt", "ranking"):
        raise UsageError(f"--loss must be 'bt' or 'ranking', got {cfg.loss!r}")
    if cfg.loss == "ranking" and cfg.utility not in (*losses.UTILITIES, "adaptive"):
        raise UsageError(f"--utility must be one of {', '.join(losses.UTILITIES)}, adaptive; got {cfg.utility!r}")
    if cfg.contrastive not in (None, "simcse", "swav"):
        raise UsageError(f"--contrastive must be 'simcse' or 'swav', got {cfg.contrastive!r}")
    if cfg.contrastive and cfg.contrastive_features not in ("pair", "diff"):
        raise UsageError("--contrastive-features must be 'pair' or 'diff'")
    if cfg.contrastive and cfg.loss != "bt":
        raise UsageError("--contrastive works with pair records (--loss bt)")
    if not 0 <= cfg.noise_rate < 0.5:
        raise UsageError(f"--noise-rate must lie in [0, 0.5), got {cfg.noise_rate}")
    if cfg.noise_loss not in ("forward", "unbiased"):
        raise UsageError(f"--noise-loss must be 'forward' or 'unbiased', got {cfg.noise_loss!r}")
    if cfg.noise_rate > 0 and cfg.loss != "bt":
        raise UsageError("--noise-rate applies to pair records (--loss bt)")
    if not 0 <= cfg.label_smoothing < 0.5:
        raise UsageError(f"--label-smoothing must lie in [0, 0.5), got {cfg.label_smoothing}")
    if cfg.batch_size < 1 or cfg.grad_accum < 1:
        raise UsageError("--batch-size and --grad-accum must be at least 1")


class TrainModule(ShardedByLayer, nn.Module):
    """Everything that trains, in one module so distributed wrappers see every forward:
    the reward model and, for SwAV, its prototypes."""

    def __init__(self, rm: RewardModel, cfg: TrainConfig, compute_dtype=torch.float32):
        super().__init__()
        self.rm = rm
        self.cfg = cfg
        self.compute_dtype = compute_dtype  # autocast entered in forward: the same on every engine
        self.prototypes = None
        if cfg.contrastive == "swav":
            weight, k, _ = CONTRASTIVE_DEFAULTS[("swav", cfg.contrastive_features)]
            hidden = rm.hf.config.hidden_size
            self.prototypes = nn.Parameter(torch.randn(cfg.prototypes or k, hidden) / math.sqrt(hidden))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, n_pairs: int = 0):
        """Rewards, plus the contrastive loss over two dropout views when configured."""
        with compute_autocast(ids.device.type, self.compute_dtype):
            return self._forward(ids, mask, n_pairs)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, n_pairs: int):
        rewards, feats = self.rm(ids, mask)
        if not self.cfg.contrastive or n_pairs == 0:
            return rewards, None
        _, feats2 = self.rm(ids, mask)
        f = self.cfg.contrastive_features
        z1 = losses.contrastive_views(feats[:n_pairs], feats[n_pairs:], f).float()
        z2 = losses.contrastive_views(feats2[:n_pairs], feats2[n_pairs:], f).float()
        _, _, temp = CONTRASTIVE_DEFAULTS[(self.cfg.contrastive, f)]
        temp = self.cfg.contrastive_temperature or temp
        if self.cfg.contrastive == "simcse":
            return rewards, losses.simcse_loss(z1, z2, temp)
        return rewards, losses.swav_loss(z1, z2, self.prototypes, temp)


def freeze_backbone(hf: nn.Module) -> None:
    for p in hf.parameters():
        p.requires_grad_(False)
    for p in head_module(hf).parameters():
        p.requires_grad_(True)


def add_lora(hf: nn.Module, cfg: TrainConfig) -> nn.Module:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise UsageError("--lora needs the 'peft' package: pip install 'rlhfkit[lora]'") from None
    config = LoraConfig(task_type="SEQ_CLS", r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                        target_modules="all-linear")
    return get_peft_model(hf, config)


# ---------------------------------------------------------------- one step's loss

def pair_batch_loss(module: nn.Module, data: PairData, idx: list[int], cfg: TrainConfig, pad_id: int, device):
    seqs = [data.chosen[i] for i in idx] + [data.rejected[i] for i in idx]
    ids, mask = pad_batch(seqs, pad_id, device)
    rewards, cl_loss = module(ids, mask, n_pairs=len(idx))
    delta = rewards[: len(idx)] - rewards[len(idx):]
    margin, label = data.margin[idx].to(device), data.label[idx].to(device)
    if cfg.noise_rate > 0 and cfg.noise_loss == "unbiased":
        loss = losses.robust_pair_loss(delta, cfg.noise_rate, label).mean()
    elif cfg.noise_rate > 0:
        loss = losses.noisy_channel_pair_loss(delta - margin, cfg.noise_rate, label).mean()
    else:
        loss = losses.pair_loss(delta, margin, label).mean()
    if cl_loss is not None:
        weight = cfg.contrastive_weight
        if weight is None:
            weight = CONTRASTIVE_DEFAULTS[(cfg.contrastive, cfg.contrastive_features)][0]
        loss = loss + weight * cl_loss
    return loss, delta.detach(), rewards.detach()


def ranking_batch_loss(module: nn.Module, data: RankingData, idx: list[int], cfg: TrainConfig, pad_id: int,
                       device, g: torch.Generator):
    seqs, better, worse, record = [], [], [], []
    for k, i in enumerate(idx):
        offset = len(seqs)
        seqs.extend(data.responses[i])
        for a, b in sample_pairs(data.pairs[i], cfg.max_pairs, g):
            better.append(offset + a)
            worse.append(offset + b)
            record.append(k)
    ids, mask = pad_batch(seqs, pad_id, device)
    rewards, _ = module(ids, mask)
    b, w = torch.tensor(better, device=device), torch.tensor(worse, device=device)
    loss = losses.ranking_loss(rewards, torch.tensor(record, device=device), b, w, [data.utilities[i] for i in idx])
    return loss, (rewards[b] - rewards[w]).detach(), rewards.detach()


def meta_step(module: nn.Module, optimizer, pref_loss_fn, meta_ids, meta_mask, meta_group, n_groups: int,
              meta_lr: float, backward=None, grad_norm=None):
    """One MetaRM step (Secrets II, Algorithm 1, first order).

    θ' = θ + η·∇J(θ) on the meta batch (ascent on the difference score); the preference loss's
    gradient is taken at θ' and applied to θ by the optimizer. ∇J comes from the run's own backward
    into ``.grad`` (not ``torch.autograd.grad``): under FSDP2 the parameters a module lists are
    sharded DTensors outside the forward's graph, so autograd.grad gave None for each and θ' = θ,
    which trained plain Bradley–Terry; the engine's backward reduces ∇J like any gradient.
    ``grad_norm`` (optional) reads the preference gradient's norm before the step; returned last.
    """
    backward = backward or torch.Tensor.backward
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer.zero_grad()
    rewards, _ = module(meta_ids, meta_mask)
    score = losses.difference_score(rewards, meta_group, n_groups)
    backward(score)
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.add_(p.grad, alpha=meta_lr)
    optimizer.zero_grad()
    loss, delta, *_ = pref_loss_fn()
    backward(loss)
    with torch.no_grad():
        for p, s in zip(params, saved):
            p.copy_(s)
    norm = grad_norm() if grad_norm is not None else None
    optimizer.step()
    return loss, delta, score.detach(), norm


# ---------------------------------------------------------------- the loop

def train_reward_model(cfg: TrainConfig, examples: Sequence[Example], source: str = "",
                       eval_examples: Sequence[Example] | None = None,
                       meta_examples: Sequence[Example] | None = None, progress: bool = True) -> dict:
    """Train, write the model directory to ``cfg.out`` and return the run's summary."""
    from ..dist import finish, warn_single_cpu_launch

    warn_single_cpu_launch()
    fitted = fit_reward_model(cfg, examples, source, eval_examples, meta_examples, progress)
    summary = dict(fitted.summary)
    if fitted.is_main:
        summary.update(save_reward_model(fitted, cfg, examples))
    finish()
    return summary


def fit_reward_model(cfg: TrainConfig, examples: Sequence[Example], source: str = "",
                     eval_examples: Sequence[Example] | None = None,
                     meta_examples: Sequence[Example] | None = None, progress: bool = True) -> Fitted:
    """The training loop. With ``cfg.out`` it logs to ``out/log.jsonl``, checkpoints and resumes;
    with ``cfg.out`` None it only trains (cross-fitting members in ``strength``).

    Multi-process (``accelerate launch`` or ``torchrun``): ``batch_size`` is the global batch, each
    process takes its share of every batch, DDP averages the gradients, logged metrics are the
    processes' mean, and only the main process writes.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    check_config(cfg)
    use_cuda = torch.cuda.is_available()
    dtype = resolve_dtype(cfg.dtype, "cuda" if use_cuda else "cpu")
    # One precision design on every engine (docs/scaling.md): fp32 weights, gradients and optimizer
    # state, bf16 compute by the module's own autocast. accelerate's "bf16" would instead make DeepSpeed
    # hold bf16 module weights (and save them) and FSDP2 reduce gradients in bf16. fp16 keeps
    # accelerate's mixed precision for its loss scaling.
    precision = "fp16" if dtype == torch.float16 else "no"
    if meta_examples and dtype == torch.float16:  # its ascent step reads .grad, which fp16's loss scaler scales
        raise UsageError("MetaRM (--meta-data) with --dtype fp16: the loss scaler would scale its ascent step "
                         "(and overflow it); use --dtype bf16 or fp32")
    if meta_examples and cfg.contrastive:  # the meta forward leaves the SwAV prototypes without a gradient
        raise UsageError("MetaRM (--meta-data) with --contrastive: train one or the other")
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # a second run in one process may ask for another precision
    from ..dist import deepspeed_logs_to_stderr

    deepspeed_logs_to_stderr()
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=precision, cpu=not use_cuda)
    if cfg.batch_size < accelerator.num_processes:  # a process with no share would repeat another's records
        raise UsageError(f"--batch-size {cfg.batch_size} is the global batch: give at least one pair per process "
                         f"({accelerator.num_processes} processes)")
    from accelerate.utils import DistributedType

    if meta_examples and accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise UsageError("MetaRM (--meta-data) under DeepSpeed: its inner ascent step reads and moves the "
                         "parameters' gradients, which a DeepSpeed engine keeps in its own buffers; run MetaRM "
                         "under DDP or FSDP (recipes/accelerate/ddp.yaml, fsdp.yaml)")
    set_seed(cfg.seed)
    if meta_examples and cfg.grad_accum != 1:
        raise UsageError("MetaRM (--meta-data) takes one batch per step: use --grad-accum 1")


    tok = load_tokenizer(cfg.model)
    hf = load_model(cfg.model, "reward")
    set_dropout(hf, cfg.dropout if cfg.dropout is not None else (0.05 if cfg.contrastive else 0.0))
    if cfg.lora:
        hf = add_lora(hf, cfg)
    if cfg.freeze_backbone:
        freeze_backbone(hf.get_base_model() if hasattr(hf, "get_base_model") else hf)
    module = TrainModule(RewardModel(hf), cfg, dtype)
    module.train()

    if cfg.loss == "bt":
        data: PairData | RankingData = pair_data(examples, tok, cfg.max_length, cfg.margin_scale, cfg.label_smoothing)
    else:
        data = ranking_data(examples, tok, cfg.max_length, cfg.utility, source, cfg.open_utility, cfg.closed_utility)
    meta = meta_data(meta_examples, tok, cfg.max_length) if meta_examples else None
    eval_set = evaluation_data(eval_examples, tok, cfg) if eval_examples else None
    lengths = [data.length(i) for i in range(len(data))] if cfg.group_by_length else None

    batches_per_epoch = math.ceil(len(data) / cfg.batch_size)
    total_steps = cfg.max_steps or max(1, math.ceil(batches_per_epoch * cfg.epochs / cfg.grad_accum))
    trainable = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)  # one kernel per step
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(cfg.scheduler, int(cfg.warmup_ratio * total_steps), total_steps))
    from ..dist import fill_deepspeed_config

    # one process's share of a batch, accumulated --grad-accum times; train-rm does not clip gradients
    fill_deepspeed_config(accelerator, max(1, cfg.batch_size // accelerator.num_processes), cfg.grad_accum, None)
    module, optimizer = accelerator.prepare(module, optimizer)
    accelerator.unwrap_model(module).rm.split_by_length = not shards_parameters(accelerator)
    device = accelerator.device
    pad_id = tok.pad_token_id
    main = accelerator.is_main_process

    step = 0
    log_path = Path(cfg.out) / "log.jsonl" if cfg.out else None
    identity = run_identity(cfg, examples, meta_examples)
    if cfg.out:
        out = Path(cfg.out)
        if main:
            out.mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()
        found = ckpt.list_checkpoints(out / "checkpoints")
        if cfg.resume and found:
            step = load_checkpoint(accelerator, module, optimizer, scheduler, found[-1], identity)
            if main:
                ckpt.rewrite_log(log_path, step)
                from ..progress import note

                note(f"train-rm: resumed at step {step} from {found[-1]}")
        elif main:  # a new run in this directory replaces the old run's log and checkpoints
            if log_path.exists():
                log_path.unlink()
            if (out / "checkpoints").exists():
                shutil.rmtree(out / "checkpoints")
        accelerator.wait_for_everyone()

    from ..progress import task_progress

    window: dict[str, list[float]] = {"loss": [], "accuracy": [], "margin": []}
    grad_norms: list[float] = []  # per optimizer step of the logging window; the same on every process

    def grad_norm():
        """The whole gradient's norm (every process's share; DeepSpeed reports its own). train-rm does
        not clip: the infinite bound only measures, so a wrong gradient scale shows in the log."""
        return accelerator.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], float("inf"))

    recent_rewards: deque = deque(maxlen=REWARD_STATS_WINDOW)  # the model's rewards near the end of training
    stopped_early = False
    micro = 0  # micro-batches seen, counted from the start of the run (resume skips the done ones)
    skip = step * cfg.grad_accum
    with task_progress("train-rm", total_steps, completed=step, enabled=progress and main) as advance:
        epoch = 0
        while step < total_steps and not stopped_early:
            for batch in epoch_order(len(data), cfg.seed, epoch, cfg.batch_size, lengths):
                if step >= total_steps or stopped_early:
                    break
                micro += 1
                if micro <= skip:
                    continue
                share = batch[accelerator.process_index :: accelerator.num_processes]
                # DDP averages the processes' gradients with equal weight, so each process's mean is
                # weighted by its share of the batch: the update (and the logged means, averaged over
                # processes) is the whole batch's mean however it splits. A process without a share
                # (a last, short batch) joins the backward with weight 0.
                weight = len(share) * accelerator.num_processes / len(batch)
                idx = share or batch[:1]
                g = torch.Generator().manual_seed(cfg.seed * 7919 + micro)
                if isinstance(data, PairData):
                    def fn(idx=idx, weight=weight):
                        loss, delta, rewards = pair_batch_loss(module, data, idx, cfg, pad_id, device)
                        return loss * weight, delta, rewards
                else:
                    def fn(idx=idx, g=g, weight=weight):
                        loss, delta, rewards = ranking_batch_loss(module, data, idx, cfg, pad_id, device, g)
                        return loss * weight, delta, rewards
                if meta is not None:
                    m_idx = torch.randint(len(meta), (cfg.meta_batch_size,), generator=g).tolist()
                    seqs = [s for i in m_idx for s in meta.responses[i]]
                    group = torch.tensor([k for k, i in enumerate(m_idx) for _ in meta.responses[i]], device=device)
                    m_ids, m_mask = pad_batch(seqs, pad_id, device)
                    loss, delta, _, norm = meta_step(module, optimizer, fn, m_ids, m_mask, group, len(m_idx),
                                                     cfg.meta_lr, backward=accelerator.backward, grad_norm=grad_norm)
                    optimizer.zero_grad()
                    synced = True
                    rewards = None
                else:
                    norm = None
                    with accelerator.accumulate(module):
                        loss, delta, rewards = fn()
                        accelerator.backward(loss)
                        if accelerator.sync_gradients:
                            norm = grad_norm()
                        optimizer.step()
                        optimizer.zero_grad()
                    synced = accelerator.sync_gradients
                if norm is not None:
                    grad_norms.append(float(norm))
                window["loss"].append(loss.item())
                window["accuracy"].append((delta > 0).float().mean().item() * weight)
                window["margin"].append(delta.mean().item() * weight)
                if rewards is not None:
                    recent_rewards.extend(rewards.float().cpu().tolist())
                if not synced:
                    continue
                scheduler.step()
                step += 1
                advance(1, loss=sum(window["loss"]) / len(window["loss"]),
                        accuracy=sum(window["accuracy"]) / len(window["accuracy"]))
                if step % cfg.logging_steps == 0 or step == total_steps:
                    means = torch.tensor([sum(v) / len(v) for v in window.values()], device=device)
                    means = accelerator.reduce(means, "mean") if accelerator.num_processes > 1 else means
                    entry = {"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0],
                             **dict(zip(window, means.tolist())),
                             "grad_norm": sum(grad_norms) / len(grad_norms) if grad_norms else None}
                    if cfg.eval_steps and eval_examples and step % cfg.eval_steps == 0:
                        entry["eval_accuracy"] = evaluate_run(accelerator, module, pad_id, eval_set)
                    if main and log_path is not None:
                        with log_path.open("a") as fh:
                            fh.write(json.dumps(entry, allow_nan=False) + "\n")
                    if cfg.early_stop_loss is not None and entry["loss"] <= cfg.early_stop_loss:
                        stopped_early = True
                    window = {k: [] for k in window}
                    grad_norms = []
                if cfg.out and cfg.save_steps and step % cfg.save_steps == 0 and step < total_steps:
                    save_checkpoint(accelerator, module, optimizer, scheduler, cfg.out, step, cfg.save_total_limit,
                                    identity)
            epoch += 1

    accelerator.wait_for_everyone()
    rm = accelerator.unwrap_model(module).rm
    rm.eval()
    summary: dict[str, Any] = {"steps": step, "stopped_early": stopped_early, "world_size": accelerator.num_processes}
    if eval_examples:
        summary["eval_accuracy"] = evaluate_run(accelerator, module, pad_id, eval_set)
    from ..dist import sharding_report

    sharding = sharding_report(accelerator, module, optimizer)
    if shards_parameters(accelerator):  # the main process gets a whole copy to save and score with
        rm = unsharded_copy(accelerator, module, cfg) or rm
    stats = torch.tensor(list(recent_rewards) or [0.0], device=device)
    if accelerator.num_processes > 1:  # every process's recent rewards
        stats = accelerator.gather(accelerator.pad_across_processes(stats, pad_index=float("nan")))
        stats = stats[~torch.isnan(stats)]
    reward_mean = stats.mean().item()
    reward_std = stats.std().item() if len(stats) > 1 else 0.0
    return Fitted(rm, tok, summary, reward_mean, reward_std, accelerator.num_processes, main, sharding)


def evaluation_data(examples: Sequence[Example], tok, cfg: TrainConfig) -> PairData | RankingData:
    """Held-out records tokenised once for every evaluation of the run."""
    if examples[0].kind == "pair":
        return pair_data(examples, tok, cfg.max_length)
    return ranking_data(examples, tok, cfg.max_length, "x", "")


def evaluate_run(accelerator, module, pad_id: int, data: PairData | RankingData) -> float | None:
    """``evaluate`` during a run: on the main process, or on every process where the weights are
    sharded (each needs the others to gather them; all compute the same number)."""
    from ..dist import full_parameters

    if not shards_parameters(accelerator):
        return evaluate(accelerator.unwrap_model(module).rm, pad_id, data) if accelerator.is_main_process else None
    with full_parameters(accelerator, module):
        return evaluate(accelerator.unwrap_model(module).rm, pad_id, data)


def unsharded_copy(accelerator, module, cfg: TrainConfig) -> RewardModel | None:
    """The trained reward model gathered into a whole, unsharded copy on the main process (None on
    the others); every process must call this."""
    from ..dist import gathered_weights, load_weights, unsharded_loading

    weights = gathered_weights(accelerator, accelerator.unwrap_model(module).rm.hf)
    if weights is None:
        return None
    with unsharded_loading(accelerator):
        hf = load_model(cfg.model, "reward")
        if cfg.lora:
            hf = add_lora(hf, cfg)
    load_weights(hf, weights)
    return RewardModel(hf).eval()


def evaluate(rm: RewardModel, pad_id: int, data: PairData | RankingData) -> float:
    """Strict pairwise accuracy (r_better > r_worse) on pairs or ranking pairs, one scoring pass."""
    was_training = rm.training
    rm.eval()
    if isinstance(data, PairData):
        r = score_sequences(rm, data.chosen + data.rejected, pad_id)
        n = len(data)
        correct = [a > b for a, b in zip(r[:n], r[n:])]
    else:
        r = score_sequences(rm, [s for seqs in data.responses for s in seqs], pad_id)
        correct, offset = [], 0
        for seqs, pairs in zip(data.responses, data.pairs):
            correct.extend(r[offset + a] > r[offset + b] for a, b in pairs)
            offset += len(seqs)
    rm.train(was_training)
    return sum(correct) / max(1, len(correct))
