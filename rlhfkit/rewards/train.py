"""The reward-model training loop (accelerate underneath: one CPU, one GPU, or many).

Data order is a pure function of (seed, epoch), and checkpoints hold the model, optimizer,
scheduler and RNG states (tensors and JSON only, see ``rlhfkit.checkpoint``), so ``resume=True``
continues an interrupted run to the same weights, and refuses a checkpoint of another run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .. import __version__
from .. import checkpoint as ckpt
from ..io import UsageError
from ..models import load_model, load_tokenizer, resolve_dtype, set_dropout, write_meta
from ..records import Example
from . import losses
from .data import (PairData, RankingData, epoch_order, fingerprint, meta_data, pair_data, ranking_data,
                   sample_pairs)
from .model import RewardModel, head_module, pad_batch, score_sequences

CONTRASTIVE_DEFAULTS = {  # Secrets II §3.1: (weight, prototypes, temperature)
    ("simcse", "pair"): (1.0, None, 0.05), ("simcse", "diff"): (1.0, None, 0.05),
    ("swav", "pair"): (0.1, 50, 0.1), ("swav", "diff"): (0.5, 20, 0.1),
}


@dataclass
class TrainConfig:
    model: str
    out: str
    loss: str = "bt"  # bt (pairs: margin and soft labels included) | ranking
    margin_scale: float = 1.0
    label_smoothing: float = 0.0
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


def check_config(cfg: TrainConfig) -> None:
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
    if not 0 <= cfg.label_smoothing < 0.5:
        raise UsageError(f"--label-smoothing must lie in [0, 0.5), got {cfg.label_smoothing}")
    if cfg.batch_size < 1 or cfg.grad_accum < 1:
        raise UsageError("--batch-size and --grad-accum must be at least 1")


class TrainModule(nn.Module):
    """Everything that trains, in one module so distributed wrappers see every forward:
    the reward model and, for SwAV, its prototypes."""

    def __init__(self, rm: RewardModel, cfg: TrainConfig):
        super().__init__()
        self.rm = rm
        self.cfg = cfg
        self.prototypes = None
        if cfg.contrastive == "swav":
            weight, k, _ = CONTRASTIVE_DEFAULTS[("swav", cfg.contrastive_features)]
            hidden = rm.hf.config.hidden_size
            self.prototypes = nn.Parameter(torch.randn(cfg.prototypes or k, hidden) / math.sqrt(hidden))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, n_pairs: int = 0):
        """Rewards, plus the contrastive loss over two dropout views when configured."""
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
    loss = losses.pair_loss(delta, data.margin[idx].to(device), data.label[idx].to(device)).mean()
    if cl_loss is not None:
        weight = cfg.contrastive_weight
        if weight is None:
            weight = CONTRASTIVE_DEFAULTS[(cfg.contrastive, cfg.contrastive_features)][0]
        loss = loss + weight * cl_loss
    return loss, delta.detach()


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
    return loss, (rewards[b] - rewards[w]).detach()


def meta_step(module: nn.Module, optimizer, pref_loss_fn, meta_ids, meta_mask, meta_group, n_groups: int,
              meta_lr: float, backward=None):
    """One MetaRM step (Secrets II, Algorithm 1, first order).

    θ' = θ + η·∇J(θ) on the meta batch (ascent on the difference score); the preference loss's
    gradient is taken at θ' and applied to θ by the optimizer.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    rewards, _ = module(meta_ids, meta_mask)
    score = losses.difference_score(rewards, meta_group, n_groups)
    grads = torch.autograd.grad(score, params, allow_unused=True)
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, g in zip(params, grads):
            if g is not None:
                p.add_(g, alpha=meta_lr)
    optimizer.zero_grad()
    loss, delta = pref_loss_fn()
    (backward or torch.Tensor.backward)(loss)
    with torch.no_grad():
        for p, s in zip(params, saved):
            p.copy_(s)
    optimizer.step()
    return loss, delta, score.detach()


# ---------------------------------------------------------------- checkpoints (tensors and JSON only)

IDENTITY_IGNORES = {"out", "resume", "logging_steps", "save_steps", "save_total_limit", "eval_steps",
                    "early_stop_loss", "dtype"}


def run_identity(cfg: TrainConfig, examples: Sequence[Example], meta_examples: Sequence[Example] | None) -> dict:
    """What a checkpoint must share with the run that resumes it: the data, and every setting that
    shapes the model, the schedule or the data order (not logging, saving or the precision)."""
    identity = {k: v for k, v in asdict(cfg).items() if k not in IDENTITY_IGNORES}
    identity["data_fingerprint"] = fingerprint(examples)
    identity["meta_fingerprint"] = fingerprint(meta_examples) if meta_examples else None
    return identity


def save_checkpoint(accelerator, module, optimizer, scheduler, out: str, step: int, keep: int, identity: dict) -> None:
    """model.safetensors, optimizer.pt (tensors only), scheduler and RNG states, trainer_state.json."""
    from safetensors.torch import save_model

    root = Path(out) / "checkpoints"
    tmp, final = root / f".tmp-step-{step}", root / f"step-{step}"
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    ckpt.save_rng(tmp, accelerator.process_index)
    if accelerator.is_main_process:
        save_model(accelerator.unwrap_model(module), str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        ckpt.write_json(tmp / "scheduler.json", scheduler.state_dict())
        if accelerator.scaler is not None:
            ckpt.write_json(tmp / "scaler.json", accelerator.scaler.state_dict())
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        ckpt.write_json(tmp / ckpt.STATE_FILE, {"step": step, "identity": identity,
                                                "world_size": accelerator.num_processes})
        ckpt.publish(tmp, final, keep)
    accelerator.wait_for_everyone()


def load_checkpoint(accelerator, module, optimizer, scheduler, last: Path, identity: dict) -> int:
    """Restore a checkpoint written by ``save_checkpoint`` after checking it belongs to this run."""
    from safetensors.torch import load_model

    state = ckpt.read_json(last / ckpt.STATE_FILE)
    ckpt.check_identity(state.get("identity"), identity, last)
    load_model(accelerator.unwrap_model(module), str(last / "model.safetensors"))
    optimizer.load_state_dict(ckpt.load_tensors(last / "optimizer.pt"))
    scheduler.load_state_dict(ckpt.read_json(last / "scheduler.json"))
    if accelerator.scaler is not None and (last / "scaler.json").exists():
        accelerator.scaler.load_state_dict(ckpt.read_json(last / "scaler.json"))
    ckpt.load_rng(last, accelerator.process_index)
    return int(state["step"])


# ---------------------------------------------------------------- the loop

def train_reward_model(cfg: TrainConfig, examples: Sequence[Example], source: str = "",
                       eval_examples: Sequence[Example] | None = None,
                       meta_examples: Sequence[Example] | None = None, progress: bool = True) -> dict:
    """Train, write the model directory to ``cfg.out`` and return the run's summary."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    check_config(cfg)
    use_cuda = torch.cuda.is_available()
    dtype = resolve_dtype(cfg.dtype, "cuda" if use_cuda else "cpu")
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "no")
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # a second run in one process may ask for another precision
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=precision, cpu=not use_cuda)
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
    module = TrainModule(RewardModel(hf), cfg)
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
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(cfg.scheduler, optimizer, num_warmup_steps=int(cfg.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    module, optimizer = accelerator.prepare(module, optimizer)
    device = accelerator.device
    pad_id = tok.pad_token_id

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "log.jsonl"
    step = 0
    identity = run_identity(cfg, examples, meta_examples)
    found = ckpt.list_checkpoints(out / "checkpoints")
    if cfg.resume and found:
        step = load_checkpoint(accelerator, module, optimizer, scheduler, found[-1], identity)
        if accelerator.is_main_process:
            ckpt.rewrite_log(log_path, step)
    elif accelerator.is_main_process:  # a new run in this directory replaces the old run's log and checkpoints
        if log_path.exists():
            log_path.unlink()
        if (out / "checkpoints").exists():
            shutil.rmtree(out / "checkpoints")

    from ..progress import task_progress

    window: dict[str, list[float]] = {"loss": [], "accuracy": [], "margin": []}
    stopped_early = False
    micro = 0  # micro-batches seen, counted from the start of the run (resume skips the done ones)
    skip = step * cfg.grad_accum
    with task_progress("train-rm", total_steps, completed=step, enabled=progress) as advance:
        epoch = 0
        while step < total_steps and not stopped_early:
            for batch in epoch_order(len(data), cfg.seed, epoch, cfg.batch_size, lengths):
                if step >= total_steps or stopped_early:
                    break
                micro += 1
                if micro <= skip:
                    continue
                idx = batch[accelerator.process_index :: accelerator.num_processes] or batch
                g = torch.Generator().manual_seed(cfg.seed * 7919 + micro)
                if isinstance(data, PairData):
                    def fn(idx=idx):
                        return pair_batch_loss(module, data, idx, cfg, pad_id, device)
                else:
                    def fn(idx=idx, g=g):
                        return ranking_batch_loss(module, data, idx, cfg, pad_id, device, g)
                if meta is not None:
                    m_idx = torch.randint(len(meta), (cfg.meta_batch_size,), generator=g).tolist()
                    seqs = [s for i in m_idx for s in meta.responses[i]]
                    group = torch.tensor([k for k, i in enumerate(m_idx) for _ in meta.responses[i]], device=device)
                    m_ids, m_mask = pad_batch(seqs, pad_id, device)
                    loss, delta, _ = meta_step(module, optimizer, fn, m_ids, m_mask, group, len(m_idx), cfg.meta_lr,
                                               backward=accelerator.backward)
                    optimizer.zero_grad()
                    synced = True
                else:
                    with accelerator.accumulate(module):
                        loss, delta = fn()
                        accelerator.backward(loss)
                        optimizer.step()
                        optimizer.zero_grad()
                    synced = accelerator.sync_gradients
                window["loss"].append(loss.item())
                window["accuracy"].append((delta > 0).float().mean().item())
                window["margin"].append(delta.mean().item())
                if not synced:
                    continue
                scheduler.step()
                step += 1
                advance(1)
                if step % cfg.logging_steps == 0 or step == total_steps:
                    entry = {"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0],
                             **{k: sum(v) / len(v) for k, v in window.items()}}
                    if cfg.eval_steps and eval_examples and step % cfg.eval_steps == 0:
                        entry["eval_accuracy"] = evaluate(accelerator.unwrap_model(module).rm, pad_id, eval_set)
                    if accelerator.is_main_process:
                        with log_path.open("a") as fh:
                            fh.write(json.dumps(entry) + "\n")
                    if cfg.early_stop_loss is not None and entry["loss"] <= cfg.early_stop_loss:
                        stopped_early = True
                    window = {k: [] for k in window}
                if cfg.save_steps and step % cfg.save_steps == 0 and step < total_steps:
                    save_checkpoint(accelerator, module, optimizer, scheduler, cfg.out, step, cfg.save_total_limit,
                                    identity)
            epoch += 1

    accelerator.wait_for_everyone()
    rm = accelerator.unwrap_model(module).rm
    rm.eval()
    summary: dict[str, Any] = {"steps": step, "stopped_early": stopped_early}
    if eval_examples:
        summary["eval_accuracy"] = evaluate(rm, pad_id, eval_set)
    if accelerator.is_main_process:
        summary.update(save_reward_model(rm, tok, cfg, examples))
    return summary


def evaluation_data(examples: Sequence[Example], tok, cfg: TrainConfig) -> PairData | RankingData:
    """Held-out records tokenised once for every evaluation of the run."""
    if examples[0].kind == "pair":
        return pair_data(examples, tok, cfg.max_length)
    return ranking_data(examples, tok, cfg.max_length, "x", "")


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


def save_reward_model(rm: RewardModel, tok, cfg: TrainConfig, examples: Sequence[Example]) -> dict:
    """Write an AutoModelForSequenceClassification directory plus rlhfkit.json; files appear whole."""
    hf = rm.hf
    if hasattr(hf, "merge_and_unload"):  # LoRA: fold the adapters in, keep the trained head
        hf = hf.merge_and_unload()
    sample = examples[:1000]
    if cfg.loss == "bt":
        d = pair_data(sample, tok, cfg.max_length)
        seqs = d.chosen + d.rejected
    else:
        seqs = [s for r in ranking_data(sample, tok, cfg.max_length, "x", "").responses for s in r]
    scores = torch.tensor(score_sequences(RewardModel(hf).eval(), seqs, tok.pad_token_id))
    out = Path(cfg.out)
    tmp = out / ".model-tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    hf.config.pad_token_id = tok.pad_token_id
    hf.save_pretrained(tmp, safe_serialization=True)
    # plain `tokenizer(text, truncation=True)` then reads what rlhfkit reads: the last max_length tokens
    tok.truncation_side, tok.model_max_length = "left", cfg.max_length
    tok.save_pretrained(tmp)
    meta = {
        "type": "reward-model", "rlhfkit_version": __version__, "base_model": cfg.model,
        "loss": cfg.loss if cfg.loss == "ranking" else "bt", "config": asdict(cfg),
        "data_fingerprint": fingerprint(examples), "n_train": len(examples),
        "reward_mean": scores.mean().item(), "reward_std": scores.std().item() if len(scores) > 1 else 0.0,
        "pooling": "cls (model's own pooler)" if rm.encoder else "last non-padding token (attention mask)",
    }
    write_meta(str(tmp), meta)
    for f in tmp.iterdir():
        os.replace(f, out / f.name)
    tmp.rmdir()
    return {"reward_mean": meta["reward_mean"], "reward_std": meta["reward_std"]}
