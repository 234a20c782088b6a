"""Token-level PPO for causal LMs, in one readable loop.

Each step: sample prompts → generate responses (KV cache) → score them → per-token log-probs of
policy and reference, values → per-token rewards r_t = −β·pen_t (+ clipped score at the end) →
GAE → a few epochs of clipped policy and value updates on mini-batches.

Distribution stays at the edges (accelerate: one CPU, one GPU, DDP/FSDP/DeepSpeed under
``accelerate launch`` or ``torchrun``): ``--batch-size`` and ``--mini-batch-size`` are global; each
process generates and scores its contiguous share of the batch; statistics that span the batch
(reward, KL, advantage whitening, the token count a mini-batch's loss is averaged over) are summed
over processes, so N processes compute the same update as one. Every row samples from its own
seeded stream, so the rollouts do not depend on the process count either.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import checkpoint as ckpt
from ..dist import full_parameters, peak_host_bytes, unsharded_loading
from ..io import UsageError
from ..models import compute_autocast, disable_dropout, frozen_copy, load_model, load_tokenizer, resolve_dtype
from . import core, state
from .state import run_identity
from .policy import ActorCritic, Critic, ValueHead, add_policy_lora, encode_prompts, forward_response, generate
from .rewards import RewardSource, load_reward


@dataclass
class PPOConfig:
    policy: str
    reward: str
    out: str
    reward_head: int | None = None
    normalize_reward: bool = False
    reward_scale: float = 1.0
    regularizer: str = "kl"
    beta: float = 0.05
    alpha: float = 0.3
    variance_power: float = 1.0
    adaptive_kl: bool = False
    target_kl: float = 6.0
    steps: int = 100
    batch_size: int = 16
    mini_batch_size: int = 8
    ppo_epochs: int = 4
    lr: float = 1.41e-5
    critic: str = "shared"  # shared (value head on the policy's features) | separate (own copy of the policy's
    # body) | shared-body (the head's loss also trains the policy's body: TRL v0's value head; can collapse)
    critic_lr: float | None = None
    vf_coef: float = 0.1
    clip: float = 0.2
    value_clip: float = 0.2
    gamma: float = 1.0
    lam: float = 0.95
    score_clip: float = 5.0
    max_grad_norm: float = 1.0
    max_prompt_length: int = 256
    max_new_tokens: int = 32
    chat_template: bool | None = None  # None: when the policy's tokenizer has one
    temperature: float = 1.0
    top_p: float = 1.0
    sample_steps: int = 10
    save_steps: int = 50
    resume: bool = False
    seed: int = 0
    dtype: str = "auto"
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32


CRITICS = ("shared", "separate", "shared-body")


def check_config(cfg: PPOConfig) -> None:
    if cfg.regularizer not in core.REGULARIZERS:
        raise UsageError(f"--regularizer must be one of {', '.join(core.REGULARIZERS)}, got {cfg.regularizer!r}")
    if cfg.critic not in CRITICS:
        raise UsageError(f"--critic must be one of {', '.join(CRITICS)}, got {cfg.critic!r}")
    if cfg.batch_size % cfg.mini_batch_size:
        raise UsageError("--batch-size must be a multiple of --mini-batch-size")
    if cfg.regularizer == "cpm" and not 0 < cfg.alpha < 1:
        raise UsageError(f"--alpha must lie in (0, 1), got {cfg.alpha}")
    if cfg.lora and cfg.critic == "separate":
        raise UsageError("--lora trains adapters and a value head on the one policy: use --critic shared")


@contextmanager
def _timer(timings: dict, name: str):
    start = time.perf_counter()
    yield
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


class PPOTrainer:
    """Holds the models and optimiser; ``step`` runs one PPO iteration on a global batch of prompts."""

    def __init__(self, cfg: PPOConfig, reward: RewardSource | None = None):
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        check_config(cfg)
        self.cfg = cfg
        AcceleratorState._reset_state()
        from ..dist import deepspeed_logs_to_stderr

        deepspeed_logs_to_stderr()
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self.world, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        if cfg.batch_size % self.world or cfg.mini_batch_size % self.world:
            raise UsageError(f"--batch-size {cfg.batch_size} and --mini-batch-size {cfg.mini_batch_size} are global: "
                             f"each must be a multiple of the {self.world} processes")
        self.device = self.accelerator.device
        from ..dist import check_ppo_engine

        check_ppo_engine(self.accelerator, cfg.critic == "separate")  # before any model is loaded
        # Mixed precision as accelerate does it: trainable weights and optimizer state in fp32 (small
        # updates at lr 1e-6 would round away in bf16), matmuls in the compute dtype under autocast.
        self.compute_dtype = resolve_dtype(cfg.dtype, self.device.type)
        self.host_peaks = {"start": peak_host_bytes()}  # peak host memory after each phase (rlhfkit.json)
        with unsharded_loading(self.accelerator):  # the engine shards the trained model at prepare
            self._load_models(cfg, reward)
        self.kl_ctl = core.AdaptiveKL(cfg.beta, cfg.target_kl) if cfg.adaptive_kl else None
        self.beta = cfg.beta

    def _load_models(self, cfg: PPOConfig, reward: RewardSource | None) -> None:
        # frozen models (reward, reference, a LoRA policy's base) may be held in the compute dtype
        self.reward = reward or load_reward(cfg.reward, cfg.reward_head, normalize=cfg.normalize_reward,
                                            dtype=self.compute_dtype, device=self.device)
        if cfg.regularizer == "var-kl" and not self.reward.is_ensemble:
            raise UsageError("--regularizer var-kl needs an ensemble reward (its spread is σ); "
                             f"{cfg.reward!r} is not one")
        torch.manual_seed(cfg.seed)
        self.tokenizer = load_tokenizer(cfg.policy)
        policy = load_model(cfg.policy, "causal-lm", dtype=self.compute_dtype if cfg.lora else torch.float32)
        disable_dropout(policy)  # train-mode forwards must equal the rollout's: ratio 1 at θ_old
        # PM's penalty is log π alone: without --adaptive-kl (which steers by the KL) it needs no reference
        self.uses_reference = cfg.regularizer != "pm" or cfg.adaptive_kl
        self.ref = None
        if cfg.lora:  # the reference is the same model with its adapters disabled: no second copy;
            policy = add_policy_lora(policy, cfg)  # adapters in fp32 over a frozen base in the compute dtype
        elif self.uses_reference:  # the frozen reference (one load: GGUF dequantisation is slow), in the compute dtype
            self.ref = frozen_copy(policy, self.compute_dtype, self.device)
        hidden = policy.config.hidden_size
        value_head = ValueHead(hidden) if cfg.critic != "separate" else None
        actor = ActorCritic(policy, value_head, self.compute_dtype, value_trains_body=cfg.critic == "shared-body")
        groups = [{"params": [p for p in policy.parameters() if p.requires_grad], "lr": cfg.lr}]
        if value_head is not None:
            groups.append({"params": list(value_head.parameters()), "lr": cfg.critic_lr or cfg.lr})
        critic = None
        if cfg.critic == "separate":
            critic = self._separate_critic(policy).to(torch.float32)
            critic.compute_dtype = self.compute_dtype
            disable_dropout(critic)
            groups.append({"params": list(critic.parameters()), "lr": cfg.critic_lr or cfg.lr})
        optimizer = torch.optim.AdamW(groups, eps=1e-5)
        from ..dist import fill_deepspeed_config

        fill_deepspeed_config(self.accelerator, max(1, cfg.mini_batch_size // self.world), 1, cfg.max_grad_norm)
        self.host_peaks["loaded"] = peak_host_bytes()  # every model whole (the trained one in fp32)
        if critic is not None:
            self.actor, self.critic, self.optimizer = self.accelerator.prepare(actor, critic, optimizer)
        else:
            self.actor, self.optimizer = self.accelerator.prepare(actor, optimizer)
            self.critic = None
        self.host_peaks["prepared"] = peak_host_bytes()  # the engine has sharded the trained model

    # -------------------------------------------------------------- the models as the loop sees them

    @property
    def policy(self) -> torch.nn.Module:
        """The policy itself (unwrapped from DDP/FSDP), for generation and saving."""
        return self.accelerator.unwrap_model(self.actor).policy

    @property
    def value_head(self) -> torch.nn.Module | None:
        return self.accelerator.unwrap_model(self.actor).value_head

    def autocast(self):
        """bf16/fp16 compute for generation and the frozen models; the trained modules enter their own."""
        return compute_autocast(self.device.type, self.compute_dtype)

    def _separate_critic(self, policy) -> Critic:
        """A critic initialised from the reward model when it is a decoder (values must not see later
        tokens) that reads the policy's tokens (same vocabulary): its body and score head become the
        value model. Otherwise a copy of the policy."""
        from transformers import AutoConfig

        from ..models import is_encoder, read_meta

        rm_dir = self.cfg.reward
        if os.path.isdir(rm_dir) and read_meta(rm_dir).get("type", "reward-model") == "reward-model":
            decoder = not is_encoder(AutoConfig.from_pretrained(rm_dir))
            if decoder and load_tokenizer(rm_dir).get_vocab() == self.tokenizer.get_vocab():
                rm = load_model(rm_dir, "reward")
                critic = Critic(rm.base_model)
                with torch.no_grad():
                    critic.head.linear.weight.copy_(rm.score.weight)
                    if getattr(rm.score, "bias", None) is not None:
                        critic.head.linear.bias.copy_(rm.score.bias)
                critic.initialised_from = rm_dir
                return critic
        critic = Critic(copy.deepcopy(policy))
        critic.initialised_from = self.cfg.policy
        return critic

    def reference_logp(self, *args) -> torch.Tensor:
        """log π_ref of the response tokens: the frozen copy, or (LoRA) the policy with adapters off."""
        if self.ref is not None:
            return forward_response(self.ref, *args, self.cfg.temperature)[0]
        with self.policy.disable_adapter():  # through the wrapped root: FSDP gathers the weights there
            return self.accelerator.unwrap_model(self.actor)(*args, self.cfg.temperature)[0]

    # -------------------------------------------------------------- across processes

    def total(self, *values: float) -> list[float]:
        """Sums over every process (the values themselves with one process)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world > 1:
            t = self.accelerator.reduce(t, "sum")
        return t.tolist()

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Every process's rows of ``t`` in process order (each process holds a contiguous share)."""
        return self.accelerator.gather(t.contiguous()) if self.world > 1 else t

    # -------------------------------------------------------------- one iteration

    def rollout(self, prompts: Sequence[Any], row_seeds: Sequence[int], timings: dict | None = None) -> dict:
        """Generate, score and evaluate this process's rows; everything the update needs, no gradients."""
        cfg, t = self.cfg, timings if timings is not None else {}
        self.actor.eval()
        prompt_ids, prompt_mask = encode_prompts(self.tokenizer, prompts, cfg.max_prompt_length, self.device,
                                                 cfg.chat_template)
        with _timer(t, "generate"), self.autocast(), full_parameters(self.accelerator, self.actor):
            response, mask = generate(self.policy, self.tokenizer, prompt_ids, prompt_mask, cfg.max_new_tokens,
                                      cfg.temperature, cfg.top_p, row_seeds=row_seeds)
        texts = self.tokenizer.batch_decode(response, skip_special_tokens=True)  # generate() padded after EOS
        with _timer(t, "reward"):
            score, sigma = self.reward(prompts, texts)
        args = (prompt_ids, prompt_mask, response, mask)
        # full-vocabulary logits for a process's whole share at once would not fit at the papers' sizes:
        # the rollout's forwards run a mini-batch's share of rows at a time (the update's own size)
        rows = max(1, cfg.mini_batch_size // self.world)
        with torch.no_grad():
            with _timer(t, "policy_forward"):
                # θ_old's log-probs through the very call the update makes (the wrapped module, its own
                # autocast inside), so the ratio is 1 at θ_old on every engine
                logp, values, entropy = by_rows(lambda *a: self.actor(*a, cfg.temperature, with_entropy=True), args,
                                                rows)
                if self.critic is not None:
                    values = by_rows(lambda *a: self.critic(*a).float(), args, rows)
        with torch.no_grad(), self.autocast():
            ref_logp = None
            if self.uses_reference:
                with _timer(t, "ref_forward"):
                    ref_logp = by_rows(self.reference_logp, args, rows)
        score = score.to(self.device).float() * cfg.reward_scale
        sigma = sigma.to(self.device).float() if sigma is not None else None
        maskf = mask.float()
        pen = core.penalty(cfg.regularizer, logp, ref_logp, alpha=cfg.alpha, sigma=sigma, power=cfg.variance_power)
        rewards = core.token_rewards(score, pen, maskf, self.beta, cfg.score_clip)
        advantages, returns = core.gae(rewards, values, maskf, cfg.gamma, cfg.lam)
        # whitened over the whole batch, every process's tokens
        n_tok, adv_sum = self.total(float(maskf.sum()), float((advantages * maskf).sum()))
        mean = adv_sum / max(n_tok, 1.0)
        (sq,) = self.total(float((((advantages - mean) * maskf) ** 2).sum()))
        advantages = core.whiten(advantages, maskf, moments=(torch.tensor(mean), torch.tensor(sq / max(n_tok, 1.0))))
        lengths = maskf.sum(-1)
        all_scores = self.gather(score)
        n_rows = len(all_scores)
        kl_sum, ent_sum, ppl_sum, len_sum = self.total(
            float(((logp - ref_logp) * maskf).sum()) if ref_logp is not None else 0.0, float((entropy * maskf).sum()),
            float(torch.exp(-(logp * maskf).sum(-1) / lengths.clamp(min=1)).sum()), float(lengths.sum()))
        stats = {
            "reward_mean": all_scores.mean().item(), "reward_std": all_scores.std().item() if n_rows > 1 else 0.0,
            "kl": kl_sum / n_rows if ref_logp is not None else None,  # not measured without a reference (PM)
            "entropy": ent_sum / max(n_tok, 1.0), "perplexity": ppl_sum / n_rows,
            "response_length": len_sum / n_rows, "beta": self.beta,
        }
        if sigma is not None:
            stats["reward_sigma_mean"] = self.gather(sigma).mean().item()
        return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "response": response, "mask": maskf,
                "logp": logp, "values": values, "advantages": advantages, "returns": returns, "texts": texts,
                "score": score, "all_lengths": self.gather(lengths), "stats": stats}

    def update(self, batch: dict, step: int, timings: dict | None = None) -> dict:
        """PPO epochs over mini-batches of the global batch. A mini-batch is a seeded draw of global
        rows; each process works on the rows it holds, its loss divided by the mini-batch's token
        count over all processes (and multiplied by the process count, which DDP divides back), so
        the summed gradient is exactly the one-process gradient."""
        cfg = self.cfg
        self.actor.train()
        if self.critic is not None:
            self.critic.train()
        local = len(batch["response"])
        first = self.rank * local  # this process holds global rows first .. first + local - 1
        lengths = batch["all_lengths"]
        sums = {"policy_loss": 0.0, "value_loss": 0.0, "clip_tokens": 0.0, "kl_tokens": 0.0, "tokens": 0.0}
        n_minibatches, grad_norms = 0, []
        with _timer(timings if timings is not None else {}, "update"):
            for epoch in range(cfg.ppo_epochs):
                g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 101 + epoch)
                order = torch.randperm(len(lengths), generator=g)
                for rows in order.split(cfg.mini_batch_size):
                    mine = [int(r) - first for r in rows if first <= int(r) < first + local]
                    n_tokens = float(lengths[rows].sum().clamp(min=1))
                    weight = 1.0 if mine else 0.0  # a process with no rows here still joins the gradient sync
                    idx = torch.tensor(mine or [0], device=self.device)
                    m = batch["mask"][idx] * weight
                    args = (batch["prompt_ids"][idx], batch["prompt_mask"][idx], batch["response"][idx], m.long())
                    logp, values, _ = self.actor(*args, cfg.temperature)  # autocast inside the module
                    if self.critic is not None:
                        values = self.critic(*args).float()
                    pg, clip_frac, approx_kl = core.policy_loss(logp, batch["logp"][idx], batch["advantages"][idx], m,
                                                                cfg.clip, total=n_tokens)
                    vf = core.value_loss(values, batch["values"][idx], batch["returns"][idx], m, cfg.value_clip,
                                         total=n_tokens)
                    loss = (pg + cfg.vf_coef * vf) * self.world
                    self.optimizer.zero_grad()
                    self.accelerator.backward(loss)
                    norm = self.clip_gradients()
                    self.optimizer.step()
                    if norm is not None:
                        grad_norms.append(norm)
                    local_tokens = float(m.sum())
                    sums["policy_loss"] += pg.item()
                    sums["value_loss"] += vf.item()
                    sums["clip_tokens"] += clip_frac.item() * local_tokens
                    sums["kl_tokens"] += approx_kl.item() * local_tokens
                    sums["tokens"] += local_tokens
                    n_minibatches += 1
        pg_sum, vf_sum, clip_sum, kl_sum, tok_sum = self.total(*sums.values())
        return {"policy_loss": pg_sum / n_minibatches, "value_loss": vf_sum / n_minibatches,
                "clip_fraction": clip_sum / max(tok_sum, 1.0), "approx_kl": kl_sum / max(tok_sum, 1.0),
                # before clipping; the same on every process
                "grad_norm": sum(grad_norms) / len(grad_norms) if grad_norms else None}

    def clip_gradients(self) -> float | None:
        """Clip to --max-grad-norm and return the norm before clipping. A separate critic is clipped on
        its own: clipped together, a critic far from its returns owns the joint norm and shrinks the
        policy's step to nothing. The shared value head stays in one clip with the policy (its own
        weights are a few thousand, and DeepSpeed, which clips inside its step over all weights at once,
        must give what one process gives)."""
        groups = [grp["params"] for grp in self.optimizer.param_groups]
        if self.critic is None or getattr(self.accelerator, "scaler", None) is not None:  # fp16 scaling unscales once
            norm = self.accelerator.clip_grad_norm_([p for g in groups for p in g], self.cfg.max_grad_norm)
            return None if norm is None else float(norm)
        norm = self.accelerator.clip_grad_norm_(list(self.actor.parameters()), self.cfg.max_grad_norm)
        self.accelerator.clip_grad_norm_(list(self.critic.parameters()), self.cfg.max_grad_norm)
        return float(norm)

    def step(self, prompts: Sequence[Any], step: int = 1, timings: dict | None = None) -> tuple[dict, dict]:
        """One iteration on the global batch ``prompts`` (every process passes the same list)."""
        share = len(prompts) // self.world
        first = self.rank * share
        seeds = [row_seed(self.cfg.seed, step, first + i) for i in range(share)]
        batch = self.rollout(list(prompts[first : first + share]), seeds, timings)
        stats = {**batch["stats"], **self.update(batch, step, timings)}
        if self.kl_ctl is not None:
            self.beta = self.kl_ctl.update(stats["kl"], len(prompts))
        batch["prompts"] = list(prompts[first : first + share])
        return stats, batch

    # -------------------------------------------------------------- state (rlhfkit/ppo/state.py)

    def save_policy(self, directory: str, extra: dict | None = None) -> None:
        state.save_policy(self, directory, extra)

    def save_checkpoint(self, step: int, identity: dict) -> None:
        state.save_checkpoint(self, step, identity)

    def load_checkpoint(self, identity: dict) -> int:
        return state.load_checkpoint(self, identity)


def by_rows(forward, args: Sequence[torch.Tensor], rows: int):
    """``forward(*args)`` computed ``rows`` rows at a time and joined along the rows: the same tensors
    (or tuples of them, None kept) as one call, in a fraction of the memory."""
    n = len(args[0])
    parts = [forward(*(a[s : s + rows] for a in args)) for s in range(0, n, rows)]
    if isinstance(parts[0], tuple):
        return tuple(None if p[0] is None else torch.cat(list(p)) for p in zip(*parts))
    return torch.cat(parts)


def row_seed(seed: int, step: int, row: int) -> int:
    """The sampling stream of global row ``row`` at ``step``: the same with one process or many."""
    return (seed * 1_000_003 + step) * 65_537 + row


def prompt_batches(n_prompts: int, batch_size: int, seed: int):
    """An endless stream of prompt-index batches; epoch e's order depends on (seed, e) only."""
    epoch = 0
    while True:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(n_prompts, generator=g).tolist()
        while len(order) < batch_size:  # fewer prompts than a batch: repeat them
            order += torch.randperm(n_prompts, generator=g).tolist()
        for s in range(0, len(order) - batch_size + 1, batch_size):
            yield order[s : s + batch_size]
        epoch += 1


def train_ppo(cfg: PPOConfig, prompts: Sequence[Any], progress: bool = True) -> dict:
    """Run PPO for ``cfg.steps`` iterations; write the policy, log.jsonl and samples.jsonl to ``cfg.out``
    (the main process writes; every process runs the same loop on its share of each batch)."""
    from accelerate.utils import gather_object

    from ..progress import task_progress

    from ..dist import warn_single_cpu_launch

    if not prompts:
        raise UsageError("no prompts")
    warn_single_cpu_launch()
    trainer = PPOTrainer(cfg)
    main = trainer.accelerator.is_main_process
    out = Path(cfg.out)
    identity = run_identity(cfg, prompts)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    trainer.accelerator.wait_for_everyone()
    start = trainer.load_checkpoint(identity) if cfg.resume else 0
    log_path, samples_path = out / "log.jsonl", out / "samples.jsonl"
    if main and start:
        from ..progress import note

        note(f"ppo: resumed at step {start} from {out / 'checkpoints'}")
    if main:
        if not cfg.resume and (out / "checkpoints").exists():  # a new run replaces the old run's checkpoints
            shutil.rmtree(out / "checkpoints")
        for path in (log_path, samples_path):
            ckpt.rewrite_log(path, start)
    batches = prompt_batches(len(prompts), cfg.batch_size, cfg.seed)
    for _ in range(start):
        next(batches)
    stats: dict = {}
    with task_progress("ppo", cfg.steps, completed=start, enabled=progress and main) as advance:
        for step in range(start + 1, cfg.steps + 1):
            batch_prompts = [prompts[i] for i in next(batches)]
            timings: dict = {}
            t0 = time.perf_counter()
            stats, batch = trainer.step(batch_prompts, step, timings)
            if "first_step" not in trainer.host_peaks:
                trainer.host_peaks["first_step"] = peak_host_bytes()
            stats = {"step": step, **stats, "seconds": time.perf_counter() - t0,
                     **{f"seconds_{k}": round(v, 4) for k, v in timings.items()}}
            if cfg.sample_steps and (step % cfg.sample_steps == 0 or step == 1):
                rows = [{"step": step, "prompt": p, "response": r, "reward": s}
                        for p, r, s in zip(batch["prompts"], batch["texts"], batch["score"].tolist())]
                rows = gather_object(rows) if trainer.world > 1 else rows
                if main:
                    with samples_path.open("a") as fh:
                        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            if main:
                with log_path.open("a") as fh:
                    fh.write(json.dumps(stats, allow_nan=False) + "\n")
            if cfg.save_steps and (step % cfg.save_steps == 0 or step == cfg.steps):  # the last, so more --steps continue
                trainer.save_checkpoint(step, identity)
            advance(1, reward=stats["reward_mean"], kl=stats["kl"])
    trainer.save_policy(cfg.out, {"final_stats": stats})
    from ..dist import finish

    finish()
    return {"steps": cfg.steps, "world_size": trainer.world,
            **{k: v for k, v in stats.items() if k in ("reward_mean", "kl", "entropy", "response_length")}}
