"""The few things every multi-process run needs besides accelerate itself."""

from __future__ import annotations

import os
from contextlib import contextmanager


def finish() -> None:
    """Wait for every process, then close the process group: a process that leaves while another
    still writes its outputs would otherwise abort (gloo) and fail the whole launch."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def warn_single_cpu_launch() -> None:
    """`accelerate launch --cpu --num_processes N` starts ONE process unless given an MPI hostfile;
    say so instead of quietly training alone."""
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and "WORLD_SIZE" not in os.environ:
        from .progress import note

        note("rlhfkit: note: `accelerate launch --cpu` runs a single process; for several CPU processes use "
             "`accelerate launch --config_file recipes/accelerate/cpu-2proc.yaml` or `torchrun --nproc_per_node N`")


def deepspeed_logs_to_stderr() -> None:
    """DeepSpeed's logger prints to stdout, where rlhfkit's records go, and accelerate imports
    DeepSpeed whenever it is installed (``unwrap_model``): a `strength | clean` pipe received a
    "Setting accelerator to CPU" line. Import it with stdout pointing at stderr (its handler binds
    the stream then) and move any handler already bound to stdout. Call before accelerate runs."""
    import contextlib
    import importlib.util
    import logging
    import sys

    if "deepspeed" not in sys.modules:
        if importlib.util.find_spec("deepspeed") is None:
            return
        import torch

        others = [getattr(torch, n, None) for n in ("cuda", "xpu", "npu", "mps")]
        if not any(m is not None and getattr(m, "is_available", lambda: False)() for m in others):
            # a CPU-only machine: the accelerator DeepSpeed would detect, stated, so plain runs do not
            # print its "Setting accelerator to CPU" warning
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        with contextlib.redirect_stdout(sys.stderr):
            import deepspeed  # noqa: F401
    for handler in logging.getLogger("DeepSpeed").handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)


def engine(accelerator) -> str:
    """What the run was sharded by, for rlhfkit.json: NO, MULTI_CPU, MULTI_GPU, DEEPSPEED-ZeRO2/3, FSDP1/2."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        return f"DEEPSPEED-ZeRO{getattr(accelerator.state.deepspeed_plugin, 'zero_stage', '?')}"
    if kind == DistributedType.FSDP:
        return f"FSDP{getattr(accelerator.state.fsdp_plugin, 'fsdp_version', 1)}"
    return kind.value


def shards_parameters(accelerator) -> bool:
    """FSDP and ZeRO-3 gather a layer's weights from every process at each forward: there, every
    process must run the same forwards (no data-dependent splitting, evaluation on all of them)."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    return kind == DistributedType.FSDP or (
        kind == DistributedType.DEEPSPEED and getattr(accelerator.state.deepspeed_plugin, "zero_stage", 0) == 3)


def check_ppo_engine(accelerator, separate_critic: bool) -> None:
    """What ppo cannot do on a sharded engine, refused before any model is loaded:
    - FSDP's ``cpu_ram_efficient_loading`` gives processes > 0 empty weights that only wrapped models
      receive: the frozen reference and reward models are never wrapped, so they would run empty
      (ZeRO-3's partitioned loading is avoided instead: ``unsharded_loading``);
    - one DeepSpeed engine wraps one model: with ``--critic separate`` the actor would train outside it;
      accelerate's FSDP2 prepares one model only (it raises at ``prepare``)."""
    from accelerate.utils import DistributedType

    from .io import UsageError

    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        if separate_critic:
            raise UsageError("--critic separate under DeepSpeed: one engine wraps one model, so the actor would "
                             "train outside it; use --critic shared, or DDP/FSDP")
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if kind == DistributedType.FSDP and separate_critic and getattr(plugin, "fsdp_version", 1) == 2:
        raise UsageError("--critic separate under FSDP2: accelerate prepares one model with fsdp_version 2, and the "
                         "critic is a second one; use --critic shared, or DDP")
    if kind == DistributedType.FSDP and getattr(plugin, "cpu_ram_efficient_loading", False):
        raise UsageError("fsdp_cpu_ram_efficient_loading: true leaves the frozen reference and reward models empty on "
                         "every process but the first (only wrapped models get its weights); set it false in the "
                         "accelerate config (recipes/accelerate/fsdp.yaml does)")


def fill_deepspeed_config(accelerator, micro_batch: int, grad_accum: int, max_grad_norm: float | None) -> None:
    """Make a DeepSpeed engine do what rlhfkit's flags say. accelerate fills the config's "auto"
    batch values only from a dataloader, which rlhfkit does not hand it (so `prepare` refused to
    start), and a config's own values silently win over --grad-accum and the trainer's gradient
    clipping (which accelerate's clip_grad_norm_ only reports under DeepSpeed). ``micro_batch`` is
    one process's examples per forward; ``max_grad_norm`` None means no clipping."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    config["train_micro_batch_size_per_gpu"] = micro_batch
    config["gradient_accumulation_steps"] = grad_accum
    config["train_batch_size"] = micro_batch * grad_accum * accelerator.num_processes
    config["gradient_clipping"] = max_grad_norm if max_grad_norm is not None else 0.0


class ShardedByLayer:
    """A mixin for rlhfkit's wrapper modules (ActorCritic, Critic, TrainModule). FSDP's
    transformer-based wrapping (accelerate, FSDP1 and FSDP2) reads ``_no_split_modules`` from the top
    module it is given; without it a wrapper became ONE FSDP unit, gathering every weight for every
    forward. This gives the layer classes of the models inside."""

    @property
    def _no_split_modules(self) -> list[str]:
        names: list[str] = []
        for module in self.modules():
            if module is self:
                continue
            for name in getattr(type(module), "_no_split_modules", None) or []:
                if isinstance(name, str) and name not in names:
                    names.append(name)
        return names


@contextmanager
def unsharded_loading(accelerator):
    """Models load whole inside this block. Under ZeRO-3 accelerate keeps a DeepSpeed config alive that
    makes transformers partition every ``from_pretrained`` at load (``zero.Init``) whatever the
    config's ``zero3_init_flag`` says; a model partitioned that way is usable only inside an engine.
    ppo's frozen reference and reward model never join one, so ppo loads its models here and the
    engine partitions the trained one at ``prepare``."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        yield
        return
    from transformers.integrations import deepspeed as hf_deepspeed

    kept = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = kept


def fully_sharded_units(model) -> list:
    """The FSDP2 (``fully_shard``) units of a model, root included; empty for FSDP1 or none."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch < 2.6
        return []
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextmanager
def full_parameters(accelerator, model):
    """Every process holds all of ``model``'s weights inside this block, which every process must
    enter (gathering is collective): for generation, evaluation and the final save. Nothing happens
    where weights are not sharded (one process, DDP, ZeRO-1/2).

    - FSDP2 (``fully_shard``): each unit unsharded once and kept so (calling an inner module, as
      ``generate`` does, skips the root's hooks and would meet sharded DTensors), resharded after;
    - FSDP1: ``summon_full_params``;
    - ZeRO-3: the parameters gathered, and the engine's per-layer gather hooks taken off meanwhile
      (with them on, every decoding step would gather each layer again), as TRL does for generation."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    fsdp2_units = fully_sharded_units(model) if kind == DistributedType.FSDP else []
    if fsdp2_units:
        state = getattr(model, "_get_fsdp_state", None)
        if state is not None:  # the root must initialise first: FSDP2 refuses a unit that started alone
            state()._lazy_init()
        for unit in fsdp2_units:
            unit.unshard()
        plugin = getattr(accelerator.state, "fsdp_plugin", None)
        restore = getattr(plugin, "reshard_after_forward", True)
        model.set_reshard_after_forward(False)  # gathered once, not again at every decoding step
        try:
            yield
        finally:
            model.set_reshard_after_forward(restore if isinstance(restore, bool) else True)
            model.set_reshard_after_forward(False, recurse=False)  # the root keeps its weights, as FSDP2 set it up
            for unit in fsdp2_units:
                unit.reshard()
    elif kind == DistributedType.FSDP:
        from torch.distributed.fsdp import FullyShardedDataParallel

        with FullyShardedDataParallel.summon_full_params(model, writeback=False, recurse=True):
            yield
    elif shards_parameters(accelerator):  # ZeRO-3
        import deepspeed
        from trl.models.utils import add_hooks, remove_hooks

        with deepspeed.zero.GatheredParameters(list(model.parameters())):
            remove_hooks(model)
            try:
                yield
            finally:
                add_hooks(model)
    else:
        yield


def _full_tensor(accelerator, p):
    """One parameter whole, on every process (collective where it is sharded): under DeepSpeed the
    fp32 master of a trained parameter (the module may hold a bf16 copy), a ZeRO-3 frozen one
    gathered, an FSDP2 DTensor's full tensor (its fp32 shards, not the bf16 compute copy)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        from deepspeed.utils import safe_get_full_fp32_param

        if p.requires_grad:
            full = safe_get_full_fp32_param(p)
            if full is not None:
                return full
        if hasattr(p, "ds_id"):  # ZeRO-3, frozen (a LoRA base)
            import deepspeed

            with deepspeed.zero.GatheredParameters([p]):
                return p.data.clone()
        return p
    return p.full_tensor() if hasattr(p, "full_tensor") else p


def clean_name(name: str) -> str:
    """A parameter's name as the bare model calls it (without FSDP's or checkpointing's wrapper parts)."""
    for part in ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod."):
        name = name.replace(part, "")
    return name


def gathered_weights(accelerator, model) -> dict | None:
    """``model``'s parameters (fp32 masters where the engine keeps them) and persistent buffers,
    whole, as CPU copies on the main process (None elsewhere). One parameter is gathered at a time,
    in the same order on every process: every process must call this."""
    main = accelerator.is_main_process
    weights = {}
    for name, p in model.named_parameters():
        full = _full_tensor(accelerator, p)
        if main:
            weights[clean_name(name)] = full.detach().to("cpu", copy=True)
    if not main:
        return None
    for prefix, module in model.named_modules():  # buffers are never sharded
        for name, b in module.named_buffers(recurse=False):
            if b is not None and name not in module._non_persistent_buffers_set:
                weights[clean_name(f"{prefix}.{name}" if prefix else name)] = b.detach().to("cpu", copy=True)
    empty = [k for k, v in weights.items() if v.numel() == 0]
    if empty:
        raise RuntimeError(f"weights still sharded after gathering: {empty[:3]}")
    return weights


def load_weights(model, weights: dict) -> None:
    """Copy ``gathered_weights`` into an unsharded model of the same architecture; every parameter
    must be found (only non-persistent buffers may be missing)."""
    missing, unexpected = model.load_state_dict(weights, strict=False)
    params = {n for n, _ in model.named_parameters()}
    if unexpected or params & set(missing):
        raise RuntimeError(f"weights do not fit the model: missing {sorted(params & set(missing))[:3]}, "
                           f"unexpected {unexpected[:3]}")


def _local_bytes(t) -> int:
    """Bytes of ``t`` this process holds: a ZeRO-3 partition, a DTensor's local shard, or all of it."""
    t = getattr(t, "ds_tensor", None) if getattr(t, "ds_tensor", None) is not None else t
    t = t.to_local() if hasattr(t, "to_local") else t
    return t.numel() * t.element_size()


def optimizer_chain(optimizer) -> list:
    """The optimizer and every one it wraps: accelerate's wrapper, DeepSpeed's ZeRO optimizer, the torch
    optimizer last (whose ``state`` holds the moments)."""
    chain = [optimizer]
    while hasattr(chain[-1], "optimizer") and chain[-1].optimizer is not chain[-1]:
        chain.append(chain[-1].optimizer)
    return chain


def _optimizer_state_bytes(optimizer) -> int:
    """The optimizer state this process holds (AdamW's moments; under DeepSpeed, of its partition)."""
    inner = optimizer_chain(optimizer)[-1]
    return sum(_local_bytes(v) for s in getattr(inner, "state", {}).values() for v in s.values()
               if hasattr(v, "numel") and v.dim() > 0)


def peak_host_bytes() -> int:
    """This process's peak resident host memory so far (Linux reports kilobytes)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def sharding_report(accelerator, wrapped, optimizer, host_peaks: dict | None = None) -> dict:
    """What each process holds of the trained model, measured: trainable parameter bytes and optimizer
    state bytes per process, FSDP2 units against the modules of the model's layer
    classes (its ``_no_split_modules``: transformer layers, and embeddings where listed), and the peak
    host memory per process (so far, and at the phases in ``host_peaks``). Every process must call it
    (the numbers are gathered); docs/scaling.md compares them with the byte-count estimates."""
    import torch

    phases = dict(host_peaks or {})
    mine = torch.tensor([sum(_local_bytes(p) for p in wrapped.parameters() if p.requires_grad),
                         _optimizer_state_bytes(optimizer), peak_host_bytes(), *phases.values()],
                        dtype=torch.float64, device=accelerator.device)
    every = accelerator.gather(mine[None]) if accelerator.num_processes > 1 else mine[None]
    layer_names = set(getattr(accelerator.unwrap_model(wrapped), "_no_split_modules", None) or [])
    return {"engine": engine(accelerator),
            "trainable_param_bytes_per_process": [int(b) for b in every[:, 0].tolist()],
            "optimizer_state_bytes_per_process": [int(b) for b in every[:, 1].tolist()],
            "peak_host_rss_bytes_per_process": [int(b) for b in every[:, 2].tolist()],
            "peak_host_rss_bytes_per_process_by_phase": {
                name: [int(b) for b in every[:, 3 + k].tolist()] for k, name in enumerate(phases)},
            "fsdp_units": len(fully_sharded_units(wrapped)),
            "layer_modules": sum(any(c.__name__ in layer_names for c in type(m).__mro__) for m in wrapped.modules())}


def descendants(pid: int) -> list[int]:
    """Every process started, directly or not, by ``pid`` (from /proc; empty where there is none)."""
    from pathlib import Path

    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not d.name.isdigit():
            continue
        try:
            ppid = next(int(x.split()[1]) for x in (d / "status").read_text().splitlines() if x.startswith("PPid:"))
        except (OSError, StopIteration, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def stop_launch(process, grace: float = 30.0) -> None:
    """Stop an `accelerate launch` / `torchrun` launch and everything it started. Killing the launcher
    alone leaves its workers running (torch's agent starts them in their own sessions), holding their
    GPU memory: ask the launcher to stop (its agent then stops the workers), then kill what is left."""
    import signal
    import subprocess

    workers = descendants(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
    for pid in workers + descendants(process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
