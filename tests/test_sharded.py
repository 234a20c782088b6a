"""Issue 25: the shipped sharded configs (recipes/accelerate/zero2.yaml, zero3.yaml, fsdp.yaml) run for
real, two CPU processes each, through `accelerate launch` and tests/sharded_cpu.py (which only lets
accelerate pick DeepSpeed/FSDP without a GPU). Each run must equal the one-process run: the logs to
the tolerances of tests/test_distributed.py, the saved model's rewards and log-probs to 1e-4 when
loaded in plain transformers, and the sharding must be real (measured bytes per process, FSDP units).
rlhfkit.json names the engine, so a silent fallback to DDP fails these tests."""

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

pytest.importorskip("deepspeed")

ROOT = Path(__file__).resolve().parents[1]
SHIM = Path(__file__).with_name("sharded_cpu.py")
REWARD = f"{Path(__file__).with_name('scripted_rewards.py')}:e_count"
CONFIGS = ["zero2", "zero3", "fsdp"]
ENGINES = {"zero2": "DEEPSPEED-ZeRO2", "zero3": "DEEPSPEED-ZeRO3", "fsdp": "FSDP2", "cpu-2proc": "MULTI_CPU"}
RM_KEYS = ["loss", "margin", "accuracy", "grad_norm"]
PPO_KEYS = ["reward_mean", "kl", "entropy", "policy_loss", "value_loss", "approx_kl", "clip_fraction", "grad_norm"]


def run(config, args, cwd, expect=0):
    """`rlhfkit ARGS` on one process (config None) or two under the accelerate config; a hang fails
    (timeout) instead of blocking the suite."""
    if config is None:
        cmd = [sys.executable, "-m", "rlhfkit", *args]
    else:
        cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
               str(ROOT / "recipes" / "accelerate" / f"{config}.yaml"), "--num_processes", "2",
               "--main_process_port", free_port(), str(SHIM), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", DS_ACCELERATOR="cpu")
    p = subprocess.run([str(a) for a in cmd], capture_output=True, text=True, env=env, timeout=900, cwd=cwd)
    assert (p.returncode == 0) == (expect == 0), p.stderr[-4000:]
    return p


def free_port() -> int:
    """A port no earlier launch is still releasing (a fixed 29500 can be in TIME_WAIT)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Data, two small model directories (loaded by weights, so every engine starts from the same
    ones) and the one-process runs every sharded run is compared with."""
    from rlhfkit.models import load_model, load_tokenizer

    d = tmp_path_factory.mktemp("sharded")
    pairs = list(synth.pairs(48, 0.0, seed=0))
    write_jsonl(d / "train.jsonl", pairs[:40])
    write_jsonl(d / "eval.jsonl", pairs[40:])
    write_jsonl(d / "meta.jsonl", [{"prompt": r["prompt"], "responses": [r["chosen"], r["rejected"]]} for r in pairs[40:]])
    (d / "prompts.txt").write_text("".join(f"prompt number {i}\n" for i in range(8)))
    torch.manual_seed(0)
    load_model("tiny-bert", "reward").save_pretrained(d / "bert")
    load_tokenizer("tiny-bert").save_pretrained(d / "bert")
    policy, tok = load_model("tiny-gpt", "causal-lm"), load_tokenizer("tiny-gpt")
    with torch.no_grad():  # EOS likely enough that rows (and the two processes) stop at different lengths
        eos = policy.transformer.wte.weight[tok.eos_token_id]
        policy.transformer.ln_f.bias.add_(30 * eos / eos.norm())
    policy.save_pretrained(d / "gpt")
    tok.save_pretrained(d / "gpt")
    for name, args in RUNS.items():
        p = run(None, [*args(d), "--out", d / f"one-{name}"], d)
        (d / f"one-{name}.summary.json").write_text(summary(p))
    return d


def summary(p) -> str:
    return [line for line in p.stderr.splitlines() if line.startswith('{"stage"')][-1]


RUNS = {
    "rm": lambda d: ["train-rm", d / "train.jsonl", "--model", d / "bert", "--batch-size", 8, "--lr", 1e-3,
                     "--logging-steps", 1, "--save-steps", 2, "--eval", d / "eval.jsonl", "--eval-steps", 2],
    # accumulation too: DeepSpeed steps (and reports its gradient norm) at the boundaries only
    "rm-lora": lambda d: ["train-rm", d / "train.jsonl", "--model", d / "bert", "--batch-size", 4, "--grad-accum", 2,
                          "--lr", 1e-3, "--logging-steps", 1, "--save-steps", 0, "--lora", "--eval", d / "eval.jsonl"],
    # the meta step's size makes MetaRM differ from plain Bradley-Terry here (the test checks it)
    "metarm": lambda d: ["train-rm", d / "train.jsonl", "--model", d / "bert", "--batch-size", 8, "--lr", 1e-3,
                         "--logging-steps", 1, "--save-steps", 0, "--meta-data", d / "meta.jsonl",
                         "--meta-batch-size", 4, "--meta-lr", 3000],
    "bt": lambda d: ["train-rm", d / "train.jsonl", "--model", d / "bert", "--batch-size", 8, "--lr", 1e-3,
                     "--logging-steps", 1, "--save-steps", 0],
    "ppo": lambda d: ["ppo", "--policy", d / "gpt", "--reward", REWARD, "--prompts", d / "prompts.txt", "--steps", 2,
                      "--batch-size", 8, "--mini-batch-size", 4, "--max-new-tokens", 12, "--lr", 1e-3,
                      "--save-steps", 1, "--sample-steps", 1, "--max-grad-norm", 0.05],
    # a GPU run's precision (--dtype auto there): one update per step, so step 1's ratio is exactly 1 at θ_old
    "ppo-bf16": lambda d: ["ppo", "--policy", d / "gpt", "--reward", REWARD, "--prompts", d / "prompts.txt",
                           "--steps", 2, "--batch-size", 8, "--mini-batch-size", 8, "--ppo-epochs", 1,
                           "--max-new-tokens", 12, "--lr", 1e-4, "--save-steps", 0, "--dtype", "bf16"],
    "rm-bf16": lambda d: ["train-rm", d / "train.jsonl", "--model", d / "bert", "--batch-size", 8, "--lr", 1e-3,
                          "--logging-steps", 1, "--save-steps", 0, "--dtype", "bf16", "--max-steps", 3],
    "ppo-lora": lambda d: ["ppo", "--policy", d / "gpt", "--reward", REWARD, "--prompts", d / "prompts.txt",
                           "--steps", 2, "--batch-size", 8, "--mini-batch-size", 4, "--max-new-tokens", 12,
                           "--lr", 1e-2, "--save-steps", 0, "--sample-steps", 1, "--lora"],
}


def close(one, two, keys, tol):
    assert len(one) == len(two) > 0
    for a, b in zip(one, two):
        for k in keys:
            if k in a:
                assert b[k] == pytest.approx(a[k], abs=tol), (k, a, b)


def rewards(model_dir, texts):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return model(**tok(texts, padding=True, return_tensors="pt")).logits[:, 0]


def log_probs(model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = torch.tensor([[5, 17, 33, 2, 9, 41, 7, 12, 99, 130]])
    with torch.no_grad():
        return torch.log_softmax(model(ids).logits.float(), -1)


def check_sharding(report, one_report, config, model_dir):
    """ZeRO-3 and FSDP hold about half the trained parameters per process, ZeRO-2 all of them; every
    engine holds about half the optimizer state; FSDP has a unit per transformer layer (and a root).
    'Whole' is what the one-process run held."""
    from transformers import AutoConfig

    assert report["engine"] == ENGINES[config]
    params, state = report["trainable_param_bytes_per_process"], report["optimizer_state_bytes_per_process"]
    whole = one_report["trainable_param_bytes_per_process"][0]
    assert len(params) == 2 and whole > 0 and one_report["optimizer_state_bytes_per_process"][0] == 2 * whole
    for p, s in zip(params, state):
        assert s / (2 * whole) == pytest.approx(0.5, abs=0.05)  # AdamW: two moments, half of them each
        assert p / whole == pytest.approx(1.0 if config == "zero2" else 0.5, abs=0.05)
    if config == "fsdp":
        layers = AutoConfig.from_pretrained(model_dir).num_hidden_layers
        assert report["fsdp_units"] >= layers + 1 and report["layer_modules"] >= layers


@pytest.mark.parametrize("config", CONFIGS)
def test_train_rm_sharded_equals_one_process(world, tmp_path, config):
    texts = [r["prompt"] + " " + r[k] for r in read_jsonl(world / "eval.jsonl") for k in ("chosen", "rejected")]
    for name in ("rm", "rm-lora"):
        out = tmp_path / name
        p = run(config, [*RUNS[name](world), "--out", out], world)
        one_dir = world / f"one-{name}"
        meta = json.loads((out / "rlhfkit.json").read_text())
        assert meta["engine"] == ENGINES[config] and meta["world_size"] == 2
        close(read_jsonl(one_dir / "log.jsonl"), read_jsonl(out / "log.jsonl"), RM_KEYS + ["eval_accuracy"], 1e-5)
        # --eval ran on both processes (collective forwards) and reported once
        one_summary = json.loads((world / f"one-{name}.summary.json").read_text())
        assert json.loads(summary(p))["eval_accuracy"] == one_summary["eval_accuracy"]
        if name == "rm":
            check_sharding(meta["sharding"], json.loads((one_dir / "rlhfkit.json").read_text())["sharding"], config, out)
        # Bradley-Terry fixes rewards up to a constant (the head's bias gets no gradient, and Adam turns
        # its rounding noise into steps of lr): compare them centred
        a, b = rewards(one_dir, texts), rewards(out, texts)
        assert torch.allclose(a - a.mean(), b - b.mean(), atol=1e-4), (a, b)
        if name == "rm":  # killed after the step-2 checkpoint, resumed: the uninterrupted run's log and model
            resumed_equal(config, name, out, 2, tmp_path, world)


def cut_after(src: Path, dst: Path, step: int) -> Path:
    """A copy of the run in ``src`` as a kill after checkpoint ``step`` leaves it: later checkpoints,
    the final model and its rlhfkit.json gone; the log runs on past the checkpoint (resume trims it)."""
    shutil.copytree(src / "checkpoints", dst / "checkpoints")
    for found in (dst / "checkpoints").glob("step-*"):
        if int(found.name.split("-")[1]) > step:
            shutil.rmtree(found)
    for f in ("log.jsonl", "samples.jsonl"):
        if (src / f).exists():
            shutil.copy(src / f, dst / f)
    mark_log(dst, step)
    last = dst / "checkpoints" / f"step-{step}"
    # tensors and JSON only: nothing in a checkpoint is unpickled, under any engine
    assert {f.suffix for f in last.iterdir()} <= {".safetensors", ".json"}, sorted(f.name for f in last.iterdir())
    return dst


def mark_log(run_dir: Path, step: int) -> None:
    """Mark the log lines up to ``step``: a resume from that checkpoint keeps them as they are, and a run
    that quietly started over (no checkpoint found) would rewrite them without the mark."""
    log = []
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        try:
            log.append(json.loads(line))
        except json.JSONDecodeError:  # a line torn by the kill: resume drops it
            continue
    write_jsonl(run_dir / "log.jsonl", [dict(e, before_the_kill=True) if e["step"] <= step else e for e in log])


def resumed_from(run_dir: Path, step: int) -> None:
    log = read_jsonl(run_dir / "log.jsonl")
    assert [e.get("before_the_kill", False) for e in log] == [e["step"] <= step for e in log], log


# one engine also resumes at another process count: 2 -> 1 and 1 -> 2
CROSS = {("rm", "zero3"), ("ppo", "fsdp")}


def resumed_equal(config, name, out, step, tmp_path, world):
    """Resume a cut copy of ``out`` (same engine, two processes); for CROSS also with one plain process,
    and the one-process run's cut under this engine. Each must end where the uninterrupted one-process
    run ended: the log to the sharded tests' tolerances, the saved model to 1e-4."""
    one_dir = world / f"one-{name}"
    tries = [(config, out, "same")]
    if (name, config) in CROSS:
        tries += [(None, out, "2to1"), (config, one_dir, "1to2")]
    for launch, source, label in tries:
        cut = cut_after(source, tmp_path / f"cut-{label}", step)
        run(launch, [*RUNS[name](world), "--out", cut, "--resume"], world)
        keys, tol = (RM_KEYS + ["eval_accuracy"], 1e-5) if name == "rm" else (PPO_KEYS, 1e-4)
        resumed_from(cut, step)
        log = read_jsonl(cut / "log.jsonl")
        assert [e["step"] for e in log] == [e["step"] for e in read_jsonl(one_dir / "log.jsonl")], label
        close(read_jsonl(one_dir / "log.jsonl"), log, keys, tol)
        if name == "rm":
            texts = [r["prompt"] + " " + r["chosen"] for r in read_jsonl(world / "eval.jsonl")]
            a, b = rewards(one_dir, texts), rewards(cut, texts)
            assert torch.allclose(a - a.mean(), b - b.mean(), atol=1e-4), (label, a, b)
        else:
            assert torch.allclose(log_probs(one_dir), log_probs(cut), atol=1e-4), label


@pytest.mark.parametrize("config", CONFIGS)
def test_ppo_sharded_equals_one_process(world, tmp_path, config):
    for name in ("ppo", "ppo-lora"):
        out = tmp_path / name
        run(config, [*RUNS[name](world), "--out", out], world)
        one_dir = world / f"one-{name}"
        meta = json.loads((out / "rlhfkit.json").read_text())
        assert meta["engine"] == ENGINES[config] and meta["world_size"] == 2
        close(read_jsonl(one_dir / "log.jsonl"), read_jsonl(out / "log.jsonl"), PPO_KEYS, 1e-4)
        if name == "ppo":
            # the clip binds (DeepSpeed ignored --max-grad-norm before: its YAML's 1.0 clipped instead),
            # so equal logs and saved weights after such an update mean every engine clipped as asked
            assert any(e["grad_norm"] > 0.05 for e in read_jsonl(one_dir / "log.jsonl"))
            check_sharding(meta["sharding"], json.loads((one_dir / "rlhfkit.json").read_text())["sharding"], config, out)
            # the two processes' rows (first and second half of each step) ended at different lengths
            # (in characters: one per token for this byte-level vocabulary, near enough)
            by_step: dict = {}
            for row in read_jsonl(out / "samples.jsonl"):
                by_step.setdefault(row["step"], []).append(len(row["response"]))
            assert any(max(v[: len(v) // 2]) != max(v[len(v) // 2 :]) for v in by_step.values()), by_step
        assert torch.allclose(log_probs(one_dir), log_probs(out), atol=1e-4)
        if name == "ppo":
            resumed_equal(config, name, out, 1, tmp_path, world)


def test_metarm_under_fsdp_equals_one_process(world, tmp_path):
    """MetaRM moves gradients itself: FSDP2 runs it (DeepSpeed refuses it, tests/test_sampling.py).
    Under FSDP2 its ascent step once saw no gradient (sharded parameters are outside the graph) and
    trained plain Bradley-Terry, which this test could not tell apart at a small --meta-lr: first,
    MetaRM must differ from BT at these settings."""
    one_meta, one_bt = read_jsonl(world / "one-metarm" / "log.jsonl"), read_jsonl(world / "one-bt" / "log.jsonl")
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(one_meta, one_bt)) > 1e-3
    for config in ("fsdp", "cpu-2proc"):  # and DDP, where the ascent's backward now reduces ∇J too
        run(config, [*RUNS["metarm"](world), "--out", tmp_path / config], world)
        assert json.loads((tmp_path / config / "rlhfkit.json").read_text())["engine"] == ENGINES[config]
        two = read_jsonl(tmp_path / config / "log.jsonl")
        close(one_meta, two, ["loss", "margin", "accuracy"], 1e-5)
        for a, b in zip(one_meta, two):  # θ' = θ + 3000·∇J multiplies ∇J's rounding differences by 3000
            assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)


def test_a_separate_critic_is_refused_under_fsdp2_before_loading(world, tmp_path):
    p = run("fsdp", [*RUNS["ppo"](world), "--critic", "separate", "--out", tmp_path / "o"], world, expect=2)
    assert "--critic separate under FSDP2" in p.stderr
    assert not (tmp_path / "o" / "rlhfkit.json").exists()


def saved_dtypes(model_dir) -> set:
    from safetensors import safe_open

    with safe_open(str(Path(model_dir) / "model.safetensors"), "pt") as f:
        return {str(f.get_slice(k).get_dtype()) for k in f.keys()}


@pytest.mark.parametrize("config", ["cpu-2proc", *CONFIGS])
def test_bf16_compute_over_fp32_weights_on_every_engine(world, tmp_path, config):
    """A GPU run computes in bf16. DeepSpeed switched rlhfkit's outer autocast off inside its engine
    (seen here through the shim, which makes its check read the CPU's autocast as a GPU's), so PPO's
    update computed in fp32 what the rollout had computed in bf16: the ratio was not 1 at θ_old. And
    train-rm asked accelerate for bf16, which made DeepSpeed hold (and save) bf16 weights. Now the
    trained modules enter their own autocast and every engine keeps fp32 weights."""
    for name in ("ppo-bf16", "rm-bf16"):
        out = tmp_path / name
        run(config, [*RUNS[name](world), "--out", out], world)
        meta = json.loads((out / "rlhfkit.json").read_text())
        assert meta["engine"] == ENGINES[config] and meta["world_size"] == 2
        one_dir = world / f"one-{name}"
        one, two = read_jsonl(one_dir / "log.jsonl"), read_jsonl(out / "log.jsonl")
        if name == "ppo-bf16":
            for log in (one, two):  # the rollout's log-probs and the update's come through one call
                assert log[0]["approx_kl"] <= 1e-6 and log[0]["clip_fraction"] == 0, log[0]
            close(one[:1], two[:1], PPO_KEYS, 1e-4)  # step 1: the same rollout and update
            # bf16 sums in another order when the batch is split over processes: after one update
            # the runs agree to a fraction of a percent, not to fp32's 1e-4
            for a, b in zip(one[1:], two[1:]):
                for k in ("reward_mean", "kl", "entropy", "grad_norm"):
                    assert b[k] == pytest.approx(a[k], rel=2e-2, abs=1e-3), (k, a, b)
        else:
            # near initialisation a pair's two rewards are within bf16's rounding, so accuracy (a sign)
            # is noise here; the loss, margin and gradient norm are compared
            close(one, two, ["loss", "margin", "grad_norm"], 2e-3)
            if config != "cpu-2proc":
                check_sharding(meta["sharding"], json.loads((one_dir / "rlhfkit.json").read_text())["sharding"],
                               config, out)  # fp32 trainable weights: the one-process run's bytes
        assert saved_dtypes(out) == {"F32"}, saved_dtypes(out)


def rank_pid(launcher_pid: int, rank: int) -> int | None:
    """The pid of the launched process with RANK=rank (a child of the launcher, or of its agent)."""
    from rlhfkit.dist import descendants

    for pid in descendants(launcher_pid):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and f"LOCAL_RANK={rank}".encode() in env:
            return pid
    return None


@pytest.mark.parametrize("config", ["cpu-2proc", "zero3"])
def test_a_dead_rank_ends_the_run_and_resume_completes_it(world, tmp_path, config):
    """SIGKILL one of two processes after a checkpoint: the launch must end (non-zero, naming the killed
    process) within 2 minutes instead of hanging in a collective, the last complete checkpoint must be
    intact and no final model written; --resume then finishes the run."""
    import signal
    import time

    from rlhfkit import checkpoint as ckpt

    out = tmp_path / "o"
    args = ["train-rm", world / "train.jsonl", "--model", world / "bert", "--batch-size", 8, "--lr", 1e-3,
            "--logging-steps", 1, "--save-steps", 2, "--epochs", 12, "--out", out]
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
           str(ROOT / "recipes" / "accelerate" / f"{config}.yaml"), "--num_processes", "2",
           "--main_process_port", free_port(), str(SHIM), *map(str, args)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", DS_ACCELERATOR="cpu")
    p = subprocess.Popen([str(a) for a in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         cwd=world)
    try:
        deadline = time.time() + 240
        while not ckpt.list_checkpoints(out / "checkpoints") and time.time() < deadline and p.poll() is None:
            time.sleep(0.2)
        assert ckpt.list_checkpoints(out / "checkpoints"), "no checkpoint before the deadline"
        victim = rank_pid(p.pid, 1)
        assert victim is not None and p.poll() is None
        os.kill(victim, signal.SIGKILL)
        killed_at = time.time()
        _, stderr = p.communicate(timeout=120)
        assert time.time() - killed_at < 120
    finally:
        if p.poll() is None:  # the launcher and every worker it started
            from rlhfkit.dist import stop_launch

            stop_launch(p, grace=5)
    assert p.returncode != 0
    assert "SIGKILL" in stderr or "Signal 9" in stderr, stderr[-3000:]
    found = ckpt.list_checkpoints(out / "checkpoints")
    assert found and not (out / "model.safetensors").exists() and not (out / "rlhfkit.json").exists()
    step = int(found[-1].name.split("-")[1])
    mark_log(out, step)
    run(config, [*args, "--resume"], world)
    resumed_from(out, step)
    log = read_jsonl(out / "log.jsonl")
    assert [e["step"] for e in log] == list(range(1, len(log) + 1)) and (out / "model.safetensors").exists()
