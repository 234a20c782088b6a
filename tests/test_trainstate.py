"""Issue 33: the engine-agnostic checkpoint (rlhfkit/trainstate.py) on one process: what it saves
resumes AdamW exactly, each parameter with its own step count, and a checkpoint of other shapes is
refused. The engines themselves are covered by tests/test_sharded.py."""

import json

import pytest
import torch
from torch import nn

from rlhfkit import trainstate


def prepared(seed: int, hidden: int = 3):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, hidden), nn.Linear(hidden, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    return accelerator, model, optimizer


def train(model, optimizer, steps, only_first_from: int | None = None):
    """Steps on fixed data; from step ``only_first_from`` on, the second layer gets no gradient (its
    AdamW step count falls behind the first layer's)."""
    for k in range(steps):
        x = torch.full((5, 4), 0.1 * (k + 1))
        frozen = only_first_from is not None and k >= only_first_from
        model[1].requires_grad_(not frozen)
        loss = model(x).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model[1].requires_grad_(True)


def test_a_checkpoint_resumes_adamw_exactly_with_each_parameters_own_step(tmp_path):
    acc, model, opt = prepared(0)
    train(model, opt, 3, only_first_from=1)  # layer 0 at step 3, layer 1 at step 1
    trainstate.save(acc, {"": model}, opt, tmp_path)
    saved = json.loads((tmp_path / trainstate.OPTIMIZER).read_text())["steps"]
    assert saved == {"0.weight": 3, "0.bias": 3, "1.weight": 1, "1.bias": 1}
    assert {f.suffix for f in tmp_path.iterdir()} == {".safetensors", ".json"}
    train(model, opt, 2)
    want = [p.detach().clone() for p in model.parameters()]

    acc, fresh, fresh_opt = prepared(1)  # other initial weights: everything must come from the checkpoint
    trainstate.load(acc, {"": fresh}, fresh_opt, tmp_path)
    train(fresh, fresh_opt, 2)
    for a, b in zip(want, fresh.parameters()):
        assert torch.equal(a, b)
    # and the step counts matter: one shared count (the old format's assumption) gives other weights
    acc, other, other_opt = prepared(1)
    trainstate.load(acc, {"": other}, other_opt, tmp_path)
    for p in other.parameters():
        other_opt.state[p]["step"] = torch.tensor(3.0)
    train(other, other_opt, 2)
    assert not all(torch.equal(a, b) for a, b in zip(want, other.parameters()))


def test_a_checkpoint_of_other_shapes_is_refused(tmp_path):
    from rlhfkit.io import UsageError

    acc, model, opt = prepared(0)
    train(model, opt, 1)
    trainstate.save(acc, {"": model}, opt, tmp_path)
    acc, wider, wider_opt = prepared(0, hidden=5)  # the same names, other sizes
    with pytest.raises(UsageError, match="has shape"):
        trainstate.load(acc, {"": wider}, wider_opt, tmp_path)
