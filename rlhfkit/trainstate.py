"""A run's trained weights and optimizer state as whole tensors by name, under any engine.

One checkpoint format for one process, DDP, DeepSpeed ZeRO-2/3 and FSDP2: every trainable parameter's
fp32 weight and AdamW moments, whole (gathered one parameter at a time, in the same order on every
process), in safetensors files of about ``CHUNK_BYTES`` each, with each parameter's AdamW step and
the optimizer's hyperparameters in JSON. Nothing is pickled. Because the tensors are whole and named as the bare
model names them, a checkpoint resumes at any process count and under any engine: each process
takes its own shard of every tensor on loading.

How each engine gives and takes a whole tensor:
- one process / DDP: the parameter and ``optimizer.state[p]`` themselves;
- FSDP2: DTensors: ``full_tensor()`` to save, ``distribute_tensor`` into the local shard to load;
- DeepSpeed: ``safe_get_full_fp32_param`` / ``safe_get_full_optimizer_state`` and the
  ``safe_set_full_*`` pair (its own checkpoints pickle; ``zero_to_fp32`` reads them: not a route).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .dist import clean_name, optimizer_chain

CHUNK_BYTES = 1 << 30  # a file of the checkpoint holds about this much (one parameter's tensors more at most)
MOMENTS = ("exp_avg", "exp_avg_sq")
INDEX = "trainable.index.json"
OPTIMIZER = "optimizer.json"


def _is_deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def _inner_optimizer(optimizer):
    """The torch optimizer under accelerate's (and DeepSpeed's) wrappers."""
    return optimizer_chain(optimizer)[-1]


def _zero_optimizer(optimizer):
    """DeepSpeed's ZeRO optimizer in the chain (None elsewhere)."""
    return next((o for o in optimizer_chain(optimizer) if hasattr(o, "fp32_partitioned_groups_flat")
                 or hasattr(o, "_lazy_init_hp_params_optimizer_state")), None)


def trained_parameters(accelerator, modules: dict) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) of every trainable parameter, in the same order on every process; names are
    the bare model's, prefixed by the module's key (``critic.``) where there are several."""
    named = []
    for prefix, module in modules.items():
        for name, p in accelerator.unwrap_model(module).named_parameters():
            if p.requires_grad:
                named.append((f"{prefix}{clean_name(name)}", p))
    return named


def _full(accelerator, optimizer, p, key: str | None) -> torch.Tensor | None:
    """The whole fp32 tensor of a parameter (key None) or of one of its AdamW moments, on every process
    (collective where the engine shards it); None for a moment the optimizer has not made yet."""
    if _is_deepspeed(accelerator):
        from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

        full = safe_get_full_fp32_param(p) if key is None else safe_get_full_optimizer_state(p, key)
        if full is None and key is None:
            full = p.detach()
        return full
    t = p.detach() if key is None else _inner_optimizer(optimizer).state.get(p, {}).get(key)
    if t is None:
        return None
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _steps(accelerator, optimizer) -> int:
    """The largest AdamW step count the optimizer holds (DeepSpeed: one per flat group, all equal)."""
    steps = [s.get("step") for s in _inner_optimizer(optimizer).state.values() if s.get("step") is not None]
    return max((int(x.item() if torch.is_tensor(x) else x) for x in steps), default=0)


def _param_step(accelerator, optimizer, p) -> int:
    """A parameter's own AdamW step count (a parameter without a gradient on some step has fewer)."""
    if _is_deepspeed(accelerator):
        return _steps(accelerator, optimizer)
    step = _inner_optimizer(optimizer).state.get(p, {}).get("step")
    return int(step.item() if torch.is_tensor(step) else step) if step is not None else 0


def save(accelerator, modules: dict, optimizer, directory: Path) -> None:
    """Write the trained weights and moments into ``directory`` (main process); every process must call."""
    from safetensors.torch import save_file

    main = accelerator.is_main_process
    stepped = _steps(accelerator, optimizer) > 0
    if _is_deepspeed(accelerator) and stepped:
        _link_deepspeed_state(optimizer)
    index: dict[str, str] = {}
    chunk: dict[str, torch.Tensor] = {}
    size, files = 0, 0

    def flush():
        nonlocal chunk, size, files
        if main and chunk:
            files += 1
            name = f"trainable-{files:05d}.safetensors"
            save_file(chunk, str(directory / name))
            index.update({k: name for k in chunk})
        chunk, size = {}, 0

    steps: dict[str, int] = {}
    for name, p in trained_parameters(accelerator, modules):
        steps[name] = _param_step(accelerator, optimizer, p)
        for key in (None, *(MOMENTS if stepped else ())):  # no moments before the first step
            full = _full(accelerator, optimizer, p, key)
            if main and full is not None:
                t = full.detach().to("cpu", torch.float32, copy=True).contiguous()
                chunk[name if key is None else f"{name}::{key}"] = t
                size += t.numel() * 4
        if size >= CHUNK_BYTES:
            flush()
    flush()
    if main:
        groups = [{k: v for k, v in g.items() if k != "params" and isinstance(v, (int, float, bool, list, tuple, str))}
                  for g in optimizer.param_groups]
        (directory / INDEX).write_text(json.dumps(index))
        (directory / OPTIMIZER).write_text(json.dumps({"steps": steps, "param_groups": groups}))


def load(accelerator, modules: dict, optimizer, directory: Path) -> None:
    """Restore what ``save`` wrote into this run's modules and optimizer, whatever the engine and the
    process count; every process must call. A checkpoint of other parameters is refused by name."""
    from safetensors import safe_open

    from .io import UsageError

    if not (directory / INDEX).exists():
        raise UsageError(f"{directory}: written by an older rlhfkit (no {INDEX}); start a new run")
    index = json.loads((directory / INDEX).read_text())
    meta = json.loads((directory / OPTIMIZER).read_text())
    named = trained_parameters(accelerator, modules)
    wanted = {n for n, _ in named}
    saved = {k for k in index if "::" not in k}
    if saved != wanted:
        odd = sorted(saved ^ wanted)
        raise UsageError(f"{directory}: its weights do not match this run's trainable ones ({len(odd)} differ, e.g. "
                         f"{odd[0]}); resume with the flags the run was made with, or start a new run")
    handles: dict = {}

    def tensor(key: str) -> torch.Tensor | None:
        if key not in index:
            return None
        if index[key] not in handles:
            handles[index[key]] = safe_open(str(directory / index[key]), "pt")
        return handles[index[key]].get_tensor(key)

    steps = {k: int(v) for k, v in meta["steps"].items()}
    if _is_deepspeed(accelerator) and any(steps.values()):
        _make_deepspeed_state(optimizer)
    for name, p in named:
        weight = tensor(name)
        shape = tuple(getattr(p, "ds_shape", None) or p.shape)
        if tuple(weight.shape) != shape:
            raise UsageError(f"{directory}: {name} has shape {tuple(weight.shape)} there and {shape} in this run; "
                             "resume with the model the run was made with, or start a new run")
        _set(accelerator, optimizer, p, None, weight)
        for key in MOMENTS:
            value = tensor(f"{name}::{key}")
            if value is not None:
                _set(accelerator, optimizer, p, key, value, steps[name])
    if _is_deepspeed(accelerator) and any(steps.values()):  # one count per flat group: all equal
        for state in _inner_optimizer(optimizer).state.values():
            if "step" in state:
                n = max(steps.values())
                state["step"] = torch.full_like(state["step"], n) if torch.is_tensor(state["step"]) else n
    for group, saved_group in zip(optimizer.param_groups, meta["param_groups"]):
        for k, v in saved_group.items():
            if k in group:
                group[k] = tuple(v) if isinstance(group[k], tuple) else v


def _make_deepspeed_state(optimizer) -> None:
    """DeepSpeed's optimizer makes its AdamW state (over its flat fp32 partitions) at the first step,
    and only then links each parameter to its fragment of it: a resume before any step has nowhere to
    put the moments. Make the state as AdamW's first step would (zeros, step 0) and link it."""
    inner, zero = _inner_optimizer(optimizer), _zero_optimizer(optimizer)
    if hasattr(zero, "fp32_partitioned_groups_flat"):  # ZeRO-3 hands the optimizer one flat group at each step
        flats = [(flat, inner.param_groups[zero.sub_group_to_group_id[i]])
                 for i, flat in enumerate(zero.fp32_partitioned_groups_flat)]
    else:
        flats = [(flat, group) for group in inner.param_groups for flat in group["params"]]
    for flat, group in flats:
        on_device = group.get("fused") or group.get("capturable")
        state = inner.state[flat]
        if "exp_avg" not in state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32, device=flat.device if on_device else "cpu")
            state["exp_avg"] = torch.zeros_like(flat)
            state["exp_avg_sq"] = torch.zeros_like(flat)
    _link_deepspeed_state(optimizer)


def _link_deepspeed_state(optimizer) -> None:
    """ZeRO-1/2 link each parameter to its fragment of the AdamW state once, after the first group's
    first step, so the parameters of a second group (PPO's value head) were linked to a state not
    made yet and their moments could not be read. Link again now that every group's state exists."""
    zero = _zero_optimizer(optimizer)
    if hasattr(zero, "_lazy_init_hp_params_optimizer_state"):
        zero._hp_optimizer_states_linked = False
        zero._lazy_init_hp_params_optimizer_state()


def _set(accelerator, optimizer, p, key: str | None, full: torch.Tensor, steps: int = 0) -> None:
    """Put a whole tensor into this process's share of a parameter (key None) or of an AdamW moment."""
    if _is_deepspeed(accelerator):
        from deepspeed.utils import (safe_set_full_fp32_param, safe_set_full_optimizer_state,
                                     safe_set_local_fp32_param, safe_set_local_optimizer_state)

        full = full.to(p.device)
        if hasattr(p, "ds_id"):  # ZeRO-3: this process's partition (its set_full_* misses the padding of
            local = _zero3_partition(p, full)  # a partition longer than what is left of a small tensor)
            if key is None:
                import deepspeed

                with deepspeed.zero.GatheredParameters([p], modifier_rank=0), torch.no_grad():
                    if accelerator.is_main_process:  # the module's copy, re-partitioned from the whole value
                        p.data.copy_(full.to(p.dtype))
                safe_set_local_fp32_param(p, local)
            else:
                safe_set_local_optimizer_state(p, local, key)
        elif key is None:  # ZeRO-1/2: the module's whole copy (what forwards read) and the fp32 master
            with torch.no_grad():
                p.data.copy_(full.to(p.dtype))
            if getattr(p, "_hp_mapping", None) is not None:
                safe_set_full_fp32_param(p, full)
        else:
            safe_set_full_optimizer_state(p, full, key)
        return
    value = _shard_like(p, full)
    if key is None:
        with torch.no_grad():
            (p.to_local() if hasattr(p, "to_local") else p).copy_(value.to_local() if hasattr(value, "to_local")
                                                                  else value)
        return
    inner = _inner_optimizer(optimizer)
    state = inner.state.setdefault(p, {})  # the optimizer makes its state at the first step: as AdamW would
    group = next(g for g in inner.param_groups if any(q is p for q in g["params"]))
    on_device = group.get("fused") or group.get("capturable")
    state["step"] = torch.tensor(float(steps), dtype=torch.float32, device=p.device if on_device else "cpu")
    state[key] = value.to(p.dtype).clone() if not hasattr(value, "to_local") else value


def _zero3_partition(p, full: torch.Tensor) -> torch.Tensor:
    """This process's ZeRO-3 partition of a whole tensor: equal parts, the last padded with zeros."""
    import torch.distributed as dist

    group = getattr(p, "ds_process_group", None)
    n, world, rank = p.ds_tensor.numel(), dist.get_world_size(group=group), dist.get_rank(group=group)
    padded = torch.zeros(n * world, dtype=torch.float32, device=full.device)
    padded[: full.numel()] = full.flatten().float()
    return padded[rank * n : (rank + 1) * n].clone()


def _shard_like(p, full: torch.Tensor):
    """``full`` laid out as ``p`` is: a DTensor with p's mesh and placements (FSDP2), else a plain tensor
    on p's device."""
    if hasattr(p, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full.to(p.to_local().device, p.dtype), p.device_mesh, p.placements)
    return full.to(p.device, p.dtype)


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The trained weights a checkpoint holds, by name (without the optimizer's moments)."""
    from safetensors.torch import load_file

    index = json.loads((Path(directory) / INDEX).read_text())
    weights: dict[str, torch.Tensor] = {}
    for name in sorted(set(index.values())):
        weights.update({k: v for k, v in load_file(str(Path(directory) / name)).items() if "::" not in k})
    return weights
