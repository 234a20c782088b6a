"""Run rlhfkit under accelerate's DeepSpeed or FSDP mode on CPU processes (gloo), for tests only.

accelerate turns both engines off when there is no GPU: `--cpu` makes them plain multi-CPU DDP, and
without it no backend is picked and every process thinks it is alone. This script, started by
`accelerate launch --config_file recipes/accelerate/{zero2,zero3,fsdp}.yaml --num_processes 2
tests/sharded_cpu.py <rlhfkit arguments>`, changes three decisions and nothing else:

- that the engine is not switched off: rlhfkit asks for `Accelerator(cpu=True)` when there is no CUDA
  device (accelerate's way of saying "CPU only"), which also turns DeepSpeed and FSDP into DDP;
- which backend a launched process uses: gloo on the CPU (accelerate would find none);
- for FSDP, that a multi-CPU process may be FSDP (accelerate allows it for accelerator devices only).

And one thing the engines see as they would on a GPU: `torch.is_autocast_enabled()` asked with no
device (DeepSpeed's `autocast_if_enabled` asks so) reads CUDA's autocast only, so under
`torch.autocast("cpu")` it said False here where a GPU run's check says True. Asked with no device, it
reports the CPU's autocast too, so a CPU run takes the branch a GPU run takes.

Everything after that is accelerate's and the engine's own code: the DeepSpeed engine (ZeRO-2/3 on
DeepSpeed's CPU accelerator) and FSDP1/FSDP2 on a CPU device mesh. rlhfkit records the engine it ran
under (`engine` in rlhfkit.json), so a test that reads it fails if this shim ever stops
working and the run silently falls back to DDP.
"""

import os
import sys

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

os.environ.setdefault("DS_ACCELERATOR", "cpu")
ENGINE = ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP")


def wants_engine() -> bool:
    return any(os.environ.get(k, "false").lower() == "true" for k in ENGINE)


_prepare_backend = PartialState._prepare_backend


def prepare_backend(self, cpu=False, sagemaker_dp=False, backend=None):
    if wants_engine() and not torch.cuda.is_available() and int(os.environ.get("LOCAL_RANK", -1)) != -1:
        return "gloo", DistributedType.MULTI_CPU
    return _prepare_backend(self, cpu, sagemaker_dp, backend)


_accelerator_state_init = AcceleratorState.__init__


def accelerator_state_init(self, *args, fsdp_plugin=None, **kwargs):
    _accelerator_state_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin
        if self._mixed_precision != "no":
            fsdp_plugin.set_mixed_precision(self._mixed_precision)
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP


_accelerator_init = Accelerator.__init__


def accelerator_init(self, *args, cpu=False, **kwargs):
    _accelerator_init(self, *args, cpu=cpu and not wants_engine(), **kwargs)


_is_autocast_enabled = torch.is_autocast_enabled


def is_autocast_enabled(device_type=None):
    if device_type is None:
        return _is_autocast_enabled("cuda") or _is_autocast_enabled("cpu")
    return _is_autocast_enabled(device_type)


torch.is_autocast_enabled = is_autocast_enabled
Accelerator.__init__ = accelerator_init
PartialState._prepare_backend = prepare_backend
AcceleratorState.__init__ = accelerator_state_init

if __name__ == "__main__":
    from rlhfkit.cli import main

    args = sys.argv[1:]
    if args[:1] == ["rlhfkit"]:  # as a recipe's LAUNCH prefix: `$LAUNCH rlhfkit train-rm ...`
        args = args[1:]
    sys.argv = ["rlhfkit", *args]
    main()
