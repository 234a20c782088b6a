"""Issue 13: two processes (gloo, CPU) through torchrun and accelerate launch compute what one process
computes with the same global batch, write once, record world_size and resume at another process count."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhfkit import synth

from conftest import read_jsonl, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
REWARD = f"{Path(__file__).with_name('scripted_rewards.py')}:e_count"
MIXED = f"{Path(__file__).with_name('scripted_rewards.py')}:byte_mix"
BIN = Path(sys.executable).parent


def launch(how, args, tmp_path):
    """Run `rlhfkit ARGS` with one process, torchrun x2 or accelerate launch x2; returns the process."""
    if how == "one":
        cmd = [sys.executable, "-m", "rlhfkit", *args]
    elif how == "torchrun":
        cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "rlhfkit", *args]
    else:
        cmd = [str(BIN / "accelerate"), "launch", "--config_file", str(ROOT / "recipes" / "accelerate" / "cpu-2proc.yaml"),
               "-m", "rlhfkit", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    p = subprocess.run([str(a) for a in cmd], capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def summaries(stderr):
    return [json.loads(line) for line in stderr.splitlines() if line.startswith('{"stage"')]


def close(a, b, keys, tol=1e-5):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for k in keys:
            assert x[k] == pytest.approx(y[k], abs=tol), (k, x, y)


@pytest.mark.parametrize("how", ["torchrun", "accelerate"])
def test_train_rm_on_two_processes_equals_one(tmp_path, how):
    data = write_jsonl(tmp_path / "d.jsonl", synth.pairs(48, 0.0, seed=0))
    args = [data, "--model", "tiny-bert", "--batch-size", 8, "--lr", 1e-3, "--logging-steps", 1, "--save-steps", 2]
    launch("one", ["train-rm", *args, "--out", tmp_path / "one"], tmp_path)
    p = launch(how, ["train-rm", *args, "--out", tmp_path / "two"], tmp_path)
    assert len(summaries(p.stderr)) == 1 and summaries(p.stderr)[0]["world_size"] == 2
    assert json.loads((tmp_path / "two" / "rlhfkit.json").read_text())["world_size"] == 2
    one, two = read_jsonl(tmp_path / "one" / "log.jsonl"), read_jsonl(tmp_path / "two" / "log.jsonl")
    assert len(one) == 6
    close(one, two, ["loss", "margin", "accuracy"])
    # a checkpoint written by two processes resumes with one and ends where the uninterrupted run ended
    shutil.rmtree(tmp_path / "two" / "checkpoints" / "step-4")
    launch("one", ["train-rm", *args, "--out", tmp_path / "two", "--resume"], tmp_path)
    close(one, read_jsonl(tmp_path / "two" / "log.jsonl"), ["loss", "margin"])


@pytest.mark.parametrize("how", ["torchrun", "accelerate"])
def test_ppo_on_two_processes_equals_one(tmp_path, how):
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(8)))
    args = ["--policy", "tiny-gpt", "--reward", REWARD, "--prompts", prompts, "--steps", 3, "--batch-size", 8,
            "--mini-batch-size", 4, "--max-new-tokens", 6, "--lr", 1e-3, "--save-steps", 2, "--sample-steps", 1]
    launch("one", ["ppo", *args, "--out", tmp_path / "one"], tmp_path)
    p = launch(how, ["ppo", *args, "--out", tmp_path / "two"], tmp_path)
    assert len(summaries(p.stderr)) == 1 and summaries(p.stderr)[0]["world_size"] == 2
    assert json.loads((tmp_path / "two" / "rlhfkit.json").read_text())["world_size"] == 2
    one, two = read_jsonl(tmp_path / "one" / "log.jsonl"), read_jsonl(tmp_path / "two" / "log.jsonl")
    keys = ["reward_mean", "kl", "entropy", "policy_loss", "value_loss", "approx_kl", "clip_fraction"]
    close(one, two, keys, tol=1e-4)
    samples = read_jsonl(tmp_path / "two" / "samples.jsonl")
    assert len(samples) == 3 * 8  # every process's rows, written once
    # resume the two-process run's step-2 checkpoint with one process (as if it had stopped after step 2):
    # the same third step
    shutil.rmtree(tmp_path / "two" / "checkpoints" / "step-3")
    launch("one", ["ppo", *args, "--out", tmp_path / "two", "--resume"], tmp_path)
    close(one, read_jsonl(tmp_path / "two" / "log.jsonl"), keys, tol=1e-4)


@pytest.mark.parametrize("policy", ["tiny-gpt", "tiny-llama"])
def test_lora_ppo_uses_the_adapter_free_model_as_reference_and_saves_merged(tmp_path, policy):
    from rlhfkit.ppo.trainer import PPOConfig, PPOTrainer

    cfg = PPOConfig(policy=policy, reward=MIXED, out=str(tmp_path / "o"), lora=True, batch_size=4, mini_batch_size=2,
                    max_new_tokens=5, lr=1e-2, lora_r=4)
    trainer = PPOTrainer(cfg)
    assert trainer.ref is None  # no second copy of the model
    trainable = [n for n, p in trainer.actor.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "value_head" in n for n in trainable)
    assert all(p.dtype == torch.float32 for n, p in trainer.actor.named_parameters() if p.requires_grad)
    stats, _ = trainer.step(["hello", "there", "a", "b"], 1)
    assert stats["kl"] == pytest.approx(0.0, abs=1e-6)  # adapters start at zero: the policy is its reference
    stats, _ = trainer.step(["hello", "there", "a", "b"], 2)
    assert stats["kl"] != 0.0  # and moves away from it once trained
    trainer.save_policy(cfg.out)
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(cfg.out)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    base = AutoModelForCausalLM.from_pretrained(cfg.out)  # differs from the untrained base: adapters folded in
    from rlhfkit.models import load_model

    original = dict(load_model(policy).named_parameters())
    assert any(not torch.equal(p, original[n]) for n, p in base.named_parameters() if n in original)


def test_lora_ppo_through_the_cli_resumes(tmp_path):
    from conftest import cli

    prompts = tmp_path / "p.txt"
    prompts.write_text("hi\nthere\n")
    args = ["ppo", "--policy", "tiny-llama", "--reward", MIXED, "--prompts", prompts, "--lora", "--batch-size", 2,
            "--mini-batch-size", 2, "--max-new-tokens", 4, "--save-steps", 2, "--lr", 1e-2]
    assert cli(*args, "--steps", 3, "--out", tmp_path / "full").exit_code == 0
    assert cli(*args, "--steps", 3, "--out", tmp_path / "cut").exit_code == 0  # checkpoints step 2
    assert (tmp_path / "cut" / "checkpoints" / "step-2" / "trainable.index.json").exists()
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step-3")  # as if it had stopped after step 2
    r = cli(*args, "--steps", 3, "--out", tmp_path / "cut", "--resume")  # continues from step 2
    assert r.exit_code == 0, r.stderr
    full, cut = read_jsonl(tmp_path / "full" / "log.jsonl"), read_jsonl(tmp_path / "cut" / "log.jsonl")
    assert [e["step"] for e in cut] == [1, 2, 3]
    close(full, cut, ["reward_mean", "kl", "policy_loss"], tol=1e-5)


def test_train_rm_with_a_batch_two_processes_split_unevenly_trains_the_one_process_model(tmp_path):
    """Batches of 5 pairs split 3 + 2 (and a last batch of 3 split 2 + 1): DDP averages the two
    processes' gradients with equal weight, so each process's mean must be weighted by its share;
    otherwise the two pairs of the smaller share counted 1.5 times. The trained models must agree."""
    data = write_jsonl(tmp_path / "d.jsonl", synth.pairs(23, 0.0, seed=0))
    args = [data, "--model", "tiny-bert", "--batch-size", 5, "--lr", 1e-3, "--epochs", 2, "--logging-steps", 1,
            "--save-steps", 0]
    launch("one", ["train-rm", *args, "--out", tmp_path / "one"], tmp_path)
    launch("torchrun", ["train-rm", *args, "--out", tmp_path / "two"], tmp_path)
    close(read_jsonl(tmp_path / "one" / "log.jsonl"), read_jsonl(tmp_path / "two" / "log.jsonl"),
          ["loss", "margin", "accuracy"], tol=1e-5)
    margins = {}  # margins, not rewards: the head's bias has no gradient in a pairwise loss, and Adam
    for name in ("one", "two"):  # turns its rounding noise into steps of the learning rate
        p = launch("one", ["score", data, "--reward", tmp_path / name], tmp_path)
        margins[name] = [r["reward_chosen"] - r["reward_rejected"] for r in read_jsonl(p.stdout)]
    assert margins["one"] == pytest.approx(margins["two"], abs=1e-4)
