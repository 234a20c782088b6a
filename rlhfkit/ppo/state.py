"""Where a PPO run is kept: the policy directory and checkpoints (tensors and JSON only, with the
run's identity), written by the main process and resumable at any process count."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import __version__
from .. import checkpoint as ckpt
from ..dist import engine
from ..models import write_meta


IDENTITY_IGNORES = {"out", "resume", "steps", "save_steps", "sample_steps", "dtype"}


# --critic's name as a checkpoint records it. The shared head's loss trained the policy's body until
# issue 35's fix, and checkpoints of then record "shared": that critic is today's --critic shared-body.
CRITIC_RECORDED = {"shared": "shared-detached", "shared-body": "shared"}
CRITIC_FLAG = {recorded: flag for flag, recorded in CRITIC_RECORDED.items()}


def run_identity(cfg, prompts: Sequence[Any]) -> dict:
    """What a checkpoint must share with the run that resumes it: the prompts and every setting that
    shapes the policy (more --steps may continue a run; logging, saving and precision may change)."""
    identity = {k: v for k, v in asdict(cfg).items() if k not in IDENTITY_IGNORES}
    identity["critic"] = CRITIC_RECORDED.get(cfg.critic, cfg.critic)
    blob = json.dumps(list(prompts), sort_keys=True, ensure_ascii=False).encode("utf-8")
    identity["prompts_fingerprint"] = hashlib.sha256(blob).hexdigest()[:16]
    return identity


def save_policy(trainer, directory: str, extra: dict | None = None) -> None:
    """The policy directory (adapters merged under --lora), written by the main process. Where the
    weights are sharded (FSDP, ZeRO-3) every process first helps gather them."""
    from ..dist import gathered_weights, load_weights, sharding_report, shards_parameters, unsharded_loading
    from ..models import load_model

    acc, cfg = trainer.accelerator, trainer.cfg
    acc.wait_for_everyone()
    sharding = sharding_report(acc, trainer.actor, trainer.optimizer, getattr(trainer, "host_peaks", None))
    weights = gathered_weights(acc, trainer.policy) if shards_parameters(acc) else None
    if not acc.is_main_process:
        return
    d = Path(directory)
    tmp = d / ".policy-tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    policy = trainer.policy
    with unsharded_loading(acc):
        if weights is not None and not cfg.lora:  # keys the model does not know would load as new layers
            unknown = set(weights) - set(policy.state_dict())
            if unknown:
                raise RuntimeError(f"gathered weights the policy does not name: {sorted(unknown)[:3]}")
        if weights is not None and cfg.lora:  # an unsharded copy to merge the adapters into
            from .policy import add_policy_lora

            policy = add_policy_lora(load_model(cfg.policy, "causal-lm", dtype=torch.float32), cfg)
            load_weights(policy, weights)
            weights = None
        if cfg.lora:  # folded in fp32 (on the CPU): into a bf16 base, updates under half a bf16 step of
            policy = policy.to("cpu", torch.float32).merge_and_unload()  # their weight would round away
        policy.save_pretrained(tmp, state_dict=weights, safe_serialization=True)
    trainer.tokenizer.save_pretrained(tmp)
    write_meta(str(tmp), {"type": "policy", "rlhfkit_version": __version__, "base_model": cfg.policy,
                          "config": asdict(cfg), "world_size": trainer.world,
                          "engine": engine(acc), "sharding": sharding,
                          # "shared" meant a head whose loss trained the policy before issue 35's fix
                          "critic_trains_policy": cfg.critic == "shared-body", **(extra or {})})
    for f in tmp.iterdir():
        os.replace(f, d / f.name)
    tmp.rmdir()


def _trained(trainer) -> dict:
    """The modules whose weights a PPO run changes, by the prefix their names take in a checkpoint."""
    return {"": trainer.actor, **({"critic.": trainer.critic} if trainer.critic is not None else {})}


def save_checkpoint(trainer, step: int, identity: dict) -> None:
    """The trained weights and AdamW moments, whole, by name (``rlhfkit.trainstate``: safetensors and
    JSON under any engine), β and the run's identity; every process must call."""
    from .. import trainstate

    acc = trainer.accelerator
    root = Path(trainer.cfg.out) / "checkpoints"
    tmp, final = root / f".tmp-step-{step}", root / f"step-{step}"
    acc.wait_for_everyone()
    if acc.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    trainstate.save(acc, _trained(trainer), trainer.optimizer, tmp)
    if acc.is_main_process:
        # β as JSON: a float64 that the adaptive controller continues exactly
        ckpt.write_json(tmp / ckpt.STATE_FILE, {"step": step, "beta": trainer.beta, "identity": identity,
                                                "world_size": trainer.world})
        ckpt.publish(tmp, final, keep=2)
    acc.wait_for_everyone()


def load_checkpoint(trainer, identity: dict) -> int:
    """Continue from the newest checkpoint of this run, at any process count and under any engine
    (rollouts and mini-batches are functions of (seed, step), not of the processes' random state)."""
    from .. import trainstate

    found = ckpt.list_checkpoints(Path(trainer.cfg.out) / "checkpoints")
    if not found:
        return 0
    last = found[-1]
    meta = ckpt.read_json(last / ckpt.STATE_FILE)
    saved = meta.get("identity") or {}
    if saved.get("critic") not in (None, identity.get("critic")):  # name the flag: the recorded name may differ
        from ..io import UsageError

        flag = CRITIC_FLAG.get(saved["critic"], saved["critic"])
        raise UsageError(f"{last} was trained with another critic: resume it with --critic {flag} (or start a new run)"
                         + (" (its shared value head's loss also trained the policy, as before issue 35's fix)"
                            if flag == "shared-body" else ""))
    ckpt.check_identity(meta.get("identity"), identity, last)
    trainstate.load(trainer.accelerator, _trained(trainer), trainer.optimizer, last)
    trainer.beta = float(meta["beta"])
    if trainer.kl_ctl is not None:
        trainer.kl_ctl.beta = trainer.beta
    return int(meta["step"])
