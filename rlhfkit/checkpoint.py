"""Training checkpoints that hold tensors and JSON only, and know which run they belong to.

Nothing here unpickles: weights and optimizer state are safetensors (``rlhfkit.trainstate``),
schedulers, RNG states and the run's identity are JSON. A
checkpoint directory from someone else can therefore not run code, and ``--resume`` refuses a
checkpoint whose run identity (data fingerprint and the arguments that shape the model and the
data order) differs from the run asking to continue it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from .io import UsageError

STATE_FILE = "trainer_state.json"


# ---------------------------------------------------------------- identity

def check_identity(saved: dict | None, current: dict, checkpoint: Path) -> None:
    """Refuse (exit 2) to continue a checkpoint of another run, naming what differs."""
    if saved is None:
        raise UsageError(f"{checkpoint}: this checkpoint records no run identity (written by an older rlhfkit); "
                         "it cannot be checked or loaded safely: start a new run (another --out, or without --resume)")
    differs = [f"{k} {saved.get(k)!r} -> {current.get(k)!r}" for k in sorted(set(saved) | set(current))
               if saved.get(k) != current.get(k)]
    if differs:
        raise UsageError(f"{checkpoint} belongs to another run ({'; '.join(differs)}): resume with the same data "
                         "and settings, or start a new run (another --out, or without --resume)")


# ---------------------------------------------------------------- RNG states as JSON + tensors

def rng_state() -> tuple[dict, dict[str, torch.Tensor]]:
    """Python, NumPy and torch (CPU and CUDA) generator states: a JSON part and a tensor part."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"python": [version, list(internal), gauss]}
    try:
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]
    except ImportError:
        pass
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    return state, tensors


def set_rng_state(state: dict, tensors: dict[str, torch.Tensor]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# ---------------------------------------------------------------- files

def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: unreadable checkpoint file ({e})") from None


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, allow_nan=False))


def save_rng(directory: Path, rank: int = 0) -> None:
    from safetensors.torch import save_file

    state, tensors = rng_state()
    write_json(directory / f"rng-{rank}.json", state)
    save_file(tensors, str(directory / f"rng-{rank}.safetensors"))


def load_rng(directory: Path, rank: int = 0) -> None:
    """Restore this rank's generators; a rank the checkpoint has none for (more processes now) keeps its own."""
    from safetensors.torch import load_file

    if not (directory / f"rng-{rank}.json").exists():
        return
    set_rng_state(read_json(directory / f"rng-{rank}.json"), load_file(str(directory / f"rng-{rank}.safetensors")))


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints (``step-N`` with a state file), oldest first."""
    found = [p for p in root.glob("step-*") if p.is_dir() and (p / STATE_FILE).exists()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def publish(tmp: Path, final: Path, keep: int) -> None:
    """Move a finished temp checkpoint into place (whole or absent) and keep the newest ``keep``."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(final.parent)[:-keep]:
        shutil.rmtree(old)


def rewrite_log(path: Path, upto_step: int) -> None:
    """On resume, keep the log lines up to the checkpoint's step. A line torn by a kill mid-write (or
    any other unparsable line) is dropped rather than blocking the resume."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("step", 0) <= upto_step:
            kept.append(line)
    path.write_text("".join(line + "\n" for line in kept))
