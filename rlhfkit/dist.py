"""The few things every multi-process run needs besides accelerate itself."""

from __future__ import annotations

import os


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


def check_checkpointing(accelerator, save_steps: int, resume: bool) -> None:
    """rlhfkit's checkpoints (tensors and JSON, no pickles) hold whole, unsharded state; under FSDP or
    DeepSpeed each process holds a shard, so checkpointing there is refused rather than half-done."""
    from accelerate.utils import DistributedType

    from .io import UsageError

    if (save_steps or resume) and accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise UsageError(f"checkpoints under {accelerator.distributed_type.value}: rlhfkit's tensors-only checkpoints "
                         "hold unsharded state, so --save-steps/--resume work with one process or DDP; "
                         "run sharded engines with --save-steps 0")


def check_sharded_eval(accelerator, evaluating: bool) -> None:
    """train-rm's --eval scores on the main process alone; under FSDP or DeepSpeed ZeRO that forward
    needs every process (collectives), so it would hang: refused up front until evaluation is sharded."""
    from accelerate.utils import DistributedType

    from .io import UsageError

    if evaluating and accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise UsageError(f"--eval under {accelerator.distributed_type.value}: evaluation runs on the main process "
                         "alone and would wait forever for the other shards; evaluate afterwards with "
                         "`rlhfkit metrics accuracy`, or train under DDP")


def check_ppo_engine(accelerator, separate_critic: bool) -> None:
    """What ppo cannot do on a sharded engine, refused before any model is loaded:
    - ZeRO-3's ``zero3_init_flag`` partitions every ``from_pretrained`` at load, and FSDP's
      ``cpu_ram_efficient_loading`` gives processes > 0 empty weights that only wrapped models
      receive: the frozen reference and reward models are never wrapped, so they would run empty;
    - one DeepSpeed engine wraps one model: with ``--critic separate`` the actor would train outside it."""
    from accelerate.utils import DistributedType

    from .io import UsageError

    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        if getattr(getattr(accelerator.state, "deepspeed_plugin", None), "zero3_init_flag", False):
            raise UsageError("zero3_init_flag: true partitions the frozen reference and reward models at load, "
                             "and they never join an engine; set `zero3_init_flag: false` in the accelerate config "
                             "(recipes/accelerate/zero3.yaml does)")
        if separate_critic:
            raise UsageError("--critic separate under DeepSpeed: one engine wraps one model, so the actor would "
                             "train outside it; use --critic shared, or DDP/FSDP")
    if kind == DistributedType.FSDP and getattr(getattr(accelerator.state, "fsdp_plugin", None),
                                                "cpu_ram_efficient_loading", False):
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
