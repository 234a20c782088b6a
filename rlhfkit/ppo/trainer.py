"""Token-level PPO for causal LMs, in one readable loop.

Each step: sample prompts → generate responses (KV cache) → score them → per-token log-probs of
policy and reference, values → per-token rewards r_t = −β·pen_t (+ clipped score at the end) →
GAE → a few epochs of clipped policy and value updates on mini-batches.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import __version__
from .. import checkpoint as ckpt
from ..io import UsageError
from ..models import disable_dropout, load_model, load_tokenizer, resolve_dtype, write_meta
from . import core
from .policy import Critic, ValueHead, encode_prompts, forward_response, generate
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
    critic: str = "shared"  # shared (value head on the policy) | separate (own copy of the policy's body)
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
    temperature: float = 1.0
    top_p: float = 1.0
    sample_steps: int = 10
    save_steps: int = 50
    resume: bool = False
    seed: int = 0
    dtype: str = "auto"


def check_config(cfg: PPOConfig) -> None:
    if cfg.regularizer not in core.REGULARIZERS:
        raise UsageError(f"--regularizer must be one of {', '.join(core.REGULARIZERS)}, got {cfg.regularizer!r}")
    if cfg.critic not in ("shared", "separate"):
        raise UsageError(f"--critic must be 'shared' or 'separate', got {cfg.critic!r}")
    if cfg.batch_size % cfg.mini_batch_size:
        raise UsageError("--batch-size must be a multiple of --mini-batch-size")
    if cfg.regularizer == "cpm" and not 0 < cfg.alpha < 1:
        raise UsageError(f"--alpha must lie in (0, 1), got {cfg.alpha}")


@contextmanager
def _timer(timings: dict, name: str):
    start = time.perf_counter()
    yield
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


class PPOTrainer:
    """Holds the models and optimiser; ``step`` runs one PPO iteration on a batch of prompts."""

    def __init__(self, cfg: PPOConfig, reward: RewardSource | None = None):
        check_config(cfg)
        self.cfg = cfg
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        # Mixed precision as accelerate does it: trainable weights and optimizer state in fp32 (small
        # updates at lr 1e-6 would round away in bf16), matmuls in the compute dtype under autocast.
        self.compute_dtype = resolve_dtype(cfg.dtype, self.device)
        self.reward = reward or load_reward(cfg.reward, cfg.reward_head, normalize=cfg.normalize_reward)
        if cfg.regularizer == "var-kl" and not self.reward.is_ensemble:
            raise UsageError("--regularizer var-kl needs an ensemble reward (its spread is σ); "
                             f"{cfg.reward!r} is not one")
        torch.manual_seed(cfg.seed)
        self.tokenizer = load_tokenizer(cfg.policy)
        self.policy = load_model(cfg.policy, "causal-lm", dtype=torch.float32).to(self.device)
        disable_dropout(self.policy)  # train-mode forwards must equal the rollout's: ratio 1 at θ_old
        # the frozen reference (one load: GGUF dequantisation is slow) may live in the compute dtype
        self.ref = copy.deepcopy(self.policy).to(self.compute_dtype).eval()
        for p in self.ref.parameters():
            p.requires_grad_(False)
        hidden = self.policy.config.hidden_size
        if cfg.critic == "shared":
            self.value_head: torch.nn.Module = ValueHead(hidden).to(self.device)
            self.critic = None
            params = [{"params": self.policy.parameters(), "lr": cfg.lr},
                      {"params": self.value_head.parameters(), "lr": cfg.critic_lr or cfg.lr}]
        else:
            self.value_head = None
            self.critic = self._separate_critic().to(self.device, torch.float32)
            disable_dropout(self.critic)
            params = [{"params": self.policy.parameters(), "lr": cfg.lr},
                      {"params": self.critic.parameters(), "lr": cfg.critic_lr or cfg.lr}]
        self.optimizer = torch.optim.AdamW(params, eps=1e-5)
        self.kl_ctl = core.AdaptiveKL(cfg.beta, cfg.target_kl) if cfg.adaptive_kl else None
        self.beta = cfg.beta

    def autocast(self):
        """bf16/fp16 compute over fp32 weights; a no-op in fp32."""
        return torch.autocast(self.device, dtype=self.compute_dtype, enabled=self.compute_dtype != torch.float32)

    def _separate_critic(self) -> Critic:
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
        critic = Critic(copy.deepcopy(self.policy))
        critic.initialised_from = self.cfg.policy
        return critic

    # -------------------------------------------------------------- pieces, each timed by the benchmark

    def values(self, prompt_ids, prompt_mask, response, mask, grad: bool):
        """Per-token values (and the policy's log-probs and entropy when the value head is shared)."""
        with torch.set_grad_enabled(grad):
            if self.critic is not None:
                return None, self.critic(prompt_ids, prompt_mask, response, mask).float(), None
            logp, values, entropy = forward_response(self.policy, prompt_ids, prompt_mask, response, mask,
                                                     self.cfg.temperature, self.value_head, with_entropy=True)
            return logp, values, entropy

    def rollout(self, prompts: Sequence[Any], timings: dict | None = None) -> dict:
        """Generate, score and evaluate one batch; everything the update needs, without gradients."""
        cfg, t = self.cfg, timings if timings is not None else {}
        self.policy.eval()
        prompt_ids, prompt_mask = encode_prompts(self.tokenizer, prompts, cfg.max_prompt_length, self.device)
        with _timer(t, "generate"), self.autocast():
            response, mask = generate(self.policy, self.tokenizer, prompt_ids, prompt_mask, cfg.max_new_tokens,
                                      cfg.temperature, cfg.top_p)
        texts = self.tokenizer.batch_decode(response, skip_special_tokens=True)  # generate() padded after EOS
        with _timer(t, "reward"):
            score, sigma = self.reward(prompts, texts)
        with torch.no_grad(), self.autocast():
            with _timer(t, "policy_forward"):
                logp, values, entropy = self.values(prompt_ids, prompt_mask, response, mask, grad=False)
                if logp is None:  # separate critic: the policy's log-probs come from their own pass
                    logp, _, entropy = forward_response(self.policy, prompt_ids, prompt_mask, response, mask,
                                                        cfg.temperature, with_entropy=True)
            with _timer(t, "ref_forward"):
                ref_logp, _, _ = forward_response(self.ref, prompt_ids, prompt_mask, response, mask, cfg.temperature)
        score = score.to(self.device).float() * cfg.reward_scale
        sigma = sigma.to(self.device).float() if sigma is not None else None
        maskf = mask.float()
        pen = core.penalty(cfg.regularizer, logp, ref_logp, alpha=cfg.alpha, sigma=sigma, power=cfg.variance_power)
        rewards = core.token_rewards(score, pen, maskf, self.beta, cfg.score_clip)
        advantages, returns = core.gae(rewards, values, maskf, cfg.gamma, cfg.lam)
        advantages = core.whiten(advantages, maskf)
        lengths = maskf.sum(-1)
        stats = {
            "reward_mean": score.mean().item(), "reward_std": score.std().item() if len(score) > 1 else 0.0,
            "kl": ((logp - ref_logp) * maskf).sum(-1).mean().item(),
            "entropy": core.masked_mean(entropy, maskf).item(),
            "perplexity": torch.exp(-(logp * maskf).sum(-1) / lengths).mean().item(),
            "response_length": lengths.mean().item(), "beta": self.beta,
        }
        if sigma is not None:
            stats["reward_sigma_mean"] = sigma.mean().item()
        return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "response": response, "mask": maskf,
                "logp": logp, "values": values, "advantages": advantages, "returns": returns, "texts": texts,
                "score": score, "stats": stats}

    def update(self, batch: dict, timings: dict | None = None) -> dict:
        """PPO epochs over shuffled mini-batches; returns the mean losses and diagnostics."""
        cfg = self.cfg
        self.policy.train()
        n = len(batch["response"])
        agg: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "clip_fraction": [], "approx_kl": []}
        with _timer(timings if timings is not None else {}, "update"):
            for _ in range(cfg.ppo_epochs):
                for idx in torch.randperm(n).split(cfg.mini_batch_size):
                    args = (batch["prompt_ids"][idx], batch["prompt_mask"][idx], batch["response"][idx],
                            batch["mask"][idx].long())
                    with self.autocast():
                        logp, values, _ = self.values(*args, grad=True)
                        if logp is None:
                            logp, _, _ = forward_response(self.policy, *args, cfg.temperature)
                    m = batch["mask"][idx]
                    pg, clip_frac, approx_kl = core.policy_loss(logp, batch["logp"][idx], batch["advantages"][idx], m, cfg.clip)
                    vf = core.value_loss(values, batch["values"][idx], batch["returns"][idx], m, cfg.value_clip)
                    loss = pg + cfg.vf_coef * vf
                    self.optimizer.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]],
                                                   cfg.max_grad_norm)
                    self.optimizer.step()
                    for k, v in (("policy_loss", pg), ("value_loss", vf), ("clip_fraction", clip_frac), ("approx_kl", approx_kl)):
                        agg[k].append(v.item())
        return {k: sum(v) / len(v) for k, v in agg.items()}

    def step(self, prompts: Sequence[Any], timings: dict | None = None) -> tuple[dict, dict]:
        batch = self.rollout(prompts, timings)
        stats = {**batch["stats"], **self.update(batch, timings)}
        if self.kl_ctl is not None:
            self.beta = self.kl_ctl.update(stats["kl"], len(prompts))
        return stats, batch

    # -------------------------------------------------------------- state

    def save_policy(self, directory: str, extra: dict | None = None) -> None:
        d = Path(directory)
        tmp = d / ".policy-tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        self.policy.save_pretrained(tmp, safe_serialization=True)
        self.tokenizer.save_pretrained(tmp)
        write_meta(str(tmp), {"type": "policy", "rlhfkit_version": __version__, "base_model": self.cfg.policy,
                              "config": asdict(self.cfg), **(extra or {})})
        for f in tmp.iterdir():
            os.replace(f, d / f.name)
        tmp.rmdir()

    def save_checkpoint(self, step: int, identity: dict) -> None:
        """policy/ (safetensors), state.pt (tensors only: optimizer, value model), JSON for the rest."""
        root = Path(self.cfg.out) / "checkpoints"
        tmp, final = root / f".tmp-step-{step}", root / f"step-{step}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        self.policy.save_pretrained(tmp / "policy", safe_serialization=True)
        torch.save({"optimizer": self.optimizer.state_dict(), "value": (self.value_head or self.critic).state_dict()},
                   tmp / "state.pt")
        ckpt.save_rng(tmp)
        # β as JSON: a float64 that the adaptive controller continues exactly
        ckpt.write_json(tmp / ckpt.STATE_FILE, {"step": step, "beta": self.beta, "identity": identity})
        ckpt.publish(tmp, final, keep=2)

    def load_checkpoint(self, identity: dict) -> int:
        found = ckpt.list_checkpoints(Path(self.cfg.out) / "checkpoints")
        if not found:
            return 0
        last = found[-1]
        from safetensors.torch import load_file

        meta = ckpt.read_json(last / ckpt.STATE_FILE)
        ckpt.check_identity(meta.get("identity"), identity, last)
        weights = load_file(str(last / "policy" / "model.safetensors"))
        self.policy.load_state_dict(weights, strict=False)
        state = ckpt.load_tensors(last / "state.pt")
        self.optimizer.load_state_dict(state["optimizer"])
        (self.value_head or self.critic).load_state_dict(state["value"])
        ckpt.load_rng(last)
        self.beta = float(meta["beta"])
        if self.kl_ctl is not None:
            self.kl_ctl.beta = self.beta
        return int(meta["step"])


IDENTITY_IGNORES = {"out", "resume", "steps", "save_steps", "sample_steps", "dtype"}


def run_identity(cfg: PPOConfig, prompts: Sequence[Any]) -> dict:
    """What a checkpoint must share with the run that resumes it: the prompts and every setting that
    shapes the policy (more --steps may continue a run; logging, saving and precision may change)."""
    identity = {k: v for k, v in asdict(cfg).items() if k not in IDENTITY_IGNORES}
    blob = json.dumps(list(prompts), sort_keys=True, ensure_ascii=False).encode("utf-8")
    identity["prompts_fingerprint"] = hashlib.sha256(blob).hexdigest()[:16]
    return identity


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
    """Run PPO for ``cfg.steps`` iterations; write the policy, log.jsonl and samples.jsonl to ``cfg.out``."""
    from ..progress import task_progress

    if not prompts:
        raise UsageError("no prompts")
    trainer = PPOTrainer(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    identity = run_identity(cfg, prompts)
    start = trainer.load_checkpoint(identity) if cfg.resume else 0
    if not cfg.resume and (out / "checkpoints").exists():  # a new run replaces the old run's checkpoints
        shutil.rmtree(out / "checkpoints")
    log_path, samples_path = out / "log.jsonl", out / "samples.jsonl"
    for path in (log_path, samples_path):
        ckpt.rewrite_log(path, start)
    batches = prompt_batches(len(prompts), cfg.batch_size, cfg.seed)
    for _ in range(start):
        next(batches)
    stats: dict = {}
    with task_progress("ppo", cfg.steps, completed=start, enabled=progress) as advance:
        for step in range(start + 1, cfg.steps + 1):
            idx = next(batches)
            batch_prompts = [prompts[i] for i in idx]
            timings: dict = {}
            t0 = time.perf_counter()
            stats, batch = trainer.step(batch_prompts, timings)
            stats = {"step": step, **stats, "seconds": time.perf_counter() - t0}
            with log_path.open("a") as fh:
                fh.write(json.dumps(stats) + "\n")
            if cfg.sample_steps and (step % cfg.sample_steps == 0 or step == 1):
                with samples_path.open("a") as fh:
                    for p, r, s in zip(batch_prompts, batch["texts"], batch["score"].tolist()):
                        fh.write(json.dumps({"step": step, "prompt": p, "response": r, "reward": s}, ensure_ascii=False) + "\n")
            if cfg.save_steps and step % cfg.save_steps == 0 and step < cfg.steps:
                trainer.save_checkpoint(step, identity)
            advance(1, reward=stats["reward_mean"], kl=stats["kl"])
    trainer.save_policy(cfg.out, {"final_stats": stats})
    return {"steps": cfg.steps, **{k: v for k, v in stats.items() if k in ("reward_mean", "kl", "entropy", "response_length")}}
