"""Run as a script by tests/test_sampling.py: FSDP2 on a one-process gloo group (CPU)."""

import os
import sys
from types import SimpleNamespace

import torch
import torch.distributed as dist

os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
os.environ["MASTER_PORT"] = sys.argv[1]
dist.init_process_group("gloo", rank=0, world_size=1)
from accelerate.utils import DistributedType  # noqa: E402
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402

from rlhfkit.models import load_model, load_tokenizer  # noqa: E402
from rlhfkit.ppo.policy import ActorCritic, ValueHead, encode_prompts, generate  # noqa: E402
from rlhfkit.dist import full_parameters  # noqa: E402

tok = load_tokenizer("tiny-llama")
policy = load_model("tiny-llama", "causal-lm").eval()
ids, mask = encode_prompts(tok, ["a film", "the plot was"], 32, "cpu", chat_template=False)
want, _ = generate(policy, tok, ids, mask, 6, row_seeds=[1, 2])
actor = ActorCritic(policy, ValueHead(policy.config.hidden_size))
mesh = init_device_mesh("cpu", (1,))
for layer in policy.model.layers:  # what accelerate's FSDP2 does with the wrappers' _no_split_modules
    fully_shard(layer, mesh=mesh)
fully_shard(actor, mesh=mesh)
accelerator = SimpleNamespace(distributed_type=DistributedType.FSDP, state=SimpleNamespace(fsdp_plugin=None))
with full_parameters(accelerator, actor):
    got, _ = generate(policy, tok, ids, mask, 6, row_seeds=[1, 2])
assert torch.equal(got, want), (got, want)
assert isinstance(policy.model.embed_tokens.weight, DTensor)  # sharded again afterwards
dist.destroy_process_group()
print("ok")
