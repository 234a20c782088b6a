"""Where a reward-model run is kept: checkpoints (tensors and JSON only, with the run's identity)
and the final model directory."""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from .. import __version__
from .. import checkpoint as ckpt
from ..models import write_meta
from ..records import Example
from .data import fingerprint
from .model import RewardModel


@dataclass
class Fitted:
    """A trained reward model still in memory, with what the run measured on the way. Where the
    weights were sharded (ZeRO-3, FSDP) ``rm`` is a whole copy on the main process only; the other
    processes keep their sharded module, usable only together."""

    rm: RewardModel
    tokenizer: Any
    summary: dict
    reward_mean: float
    reward_std: float
    world_size: int
    is_main: bool
    sharding: dict | None = None  # what each process held (dist.sharding_report)


# ---------------------------------------------------------------- checkpoints (tensors and JSON only)

IDENTITY_IGNORES = {"out", "resume", "logging_steps", "save_steps", "save_total_limit", "eval_steps",
                    "early_stop_loss", "dtype"}


def run_identity(cfg: Any, examples: Sequence[Example], meta_examples: Sequence[Example] | None) -> dict:
    """What a checkpoint must share with the run that resumes it: the data, and every setting that
    shapes the model, the schedule or the data order (not logging, saving or the precision)."""
    identity = {k: v for k, v in asdict(cfg).items() if k not in IDENTITY_IGNORES}
    identity["data_fingerprint"] = fingerprint(examples)
    identity["meta_fingerprint"] = fingerprint(meta_examples) if meta_examples else None
    return identity


def save_checkpoint(accelerator, module, optimizer, scheduler, out: str, step: int, keep: int, identity: dict) -> None:
    """The trained weights and AdamW moments, whole, by name (``rlhfkit.trainstate``: safetensors and
    JSON, under any engine), the scheduler, every process's RNG state, trainer_state.json. The
    checkpoint appears whole or not at all (``ckpt.publish``); every process must call."""
    from .. import trainstate

    root = Path(out) / "checkpoints"
    tmp, final = root / f".tmp-step-{step}", root / f"step-{step}"
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    ckpt.save_rng(tmp, accelerator.process_index)
    trainstate.save(accelerator, {"": module}, optimizer, tmp)
    if accelerator.is_main_process:
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
    """Restore a checkpoint written by ``save_checkpoint`` after checking it belongs to this run; at any
    process count and under any engine."""
    from .. import trainstate

    state = ckpt.read_json(last / ckpt.STATE_FILE)
    ckpt.check_identity(state.get("identity"), identity, last)
    trainstate.load(accelerator, {"": module}, optimizer, last)
    scheduler.load_state_dict(ckpt.read_json(last / "scheduler.json"))
    if accelerator.scaler is not None and (last / "scaler.json").exists():
        accelerator.scaler.load_state_dict(ckpt.read_json(last / "scaler.json"))
    ckpt.load_rng(last, accelerator.process_index)
    return int(state["step"])


def save_reward_model(fitted: Fitted, cfg: Any, examples: Sequence[Example]) -> dict:
    """Write an AutoModelForSequenceClassification directory plus rlhfkit.json; files appear whole.

    ``reward_mean``/``reward_std`` (for ``ppo --normalize-reward``) come from the rewards the model
    gave in its last training forward passes (up to the train loop's window), not from a second pass."""
    rm, tok = fitted.rm, fitted.tokenizer
    hf = rm.hf
    if hasattr(hf, "merge_and_unload"):  # LoRA: fold the adapters in, keep the trained head
        hf = hf.merge_and_unload()
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
        "data_fingerprint": fingerprint(examples), "n_train": len(examples), "world_size": fitted.world_size,
        "engine": (fitted.sharding or {}).get("engine", "NO"), "sharding": fitted.sharding,
        "reward_mean": fitted.reward_mean, "reward_std": fitted.reward_std,
        "pooling": "cls (model's own pooler)" if rm.encoder else "last non-padding token (attention mask)",
    }
    write_meta(str(tmp), meta)
    for f in tmp.iterdir():
        os.replace(f, out / f.name)
    tmp.rmdir()
    return {"reward_mean": meta["reward_mean"], "reward_std": meta["reward_std"]}
