"""What each shipped sharded config holds per process, measured, next to the byte-count estimate.

Runs `train-rm` (tiny-bert shape) and `ppo` (tiny-gpt shape) with two CPU processes under each of
recipes/accelerate/{zero2,zero3,fsdp}.yaml (through tests/sharded_cpu.py, which lets accelerate pick
DeepSpeed/FSDP without a GPU) and one process, and reads the `sharding` report rlhfkit.json records:
trainable parameter bytes and optimizer-state bytes per process, FSDP units.

    python benchmarks/sharded_bytes.py [--out benchmarks/results/sharded_bytes_cpu.json]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIM = ROOT / "tests" / "sharded_cpu.py"
REWARD = f"{ROOT / 'tests' / 'scripted_rewards.py'}:e_count"


def launch(config, args, cwd):
    if config is None:
        cmd = [sys.executable, "-m", "rlhfkit", *args]
    else:
        cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
               str(ROOT / "recipes" / "accelerate" / f"{config}.yaml"), "--num_processes", "2", str(SHIM), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    p = subprocess.run([str(a) for a in cmd], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    if p.returncode:
        raise SystemExit(p.stderr[-3000:])


def estimate(config, whole_params: int) -> dict:
    """fp32 masters (4 bytes a parameter) and AdamW's two fp32 moments (8), over N = 2 processes."""
    n = 2
    return {"params": whole_params if config in (None, "zero2") else whole_params / n,
            "optimizer": 2 * whole_params / (1 if config is None else n)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sharded_bytes_cpu.json"))
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from rlhfkit import synth
    from rlhfkit.models import load_model, load_tokenizer

    results = {"command": "python benchmarks/sharded_bytes.py", "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in synth.pairs(32, 0.0, seed=0)))
        (d / "prompts.txt").write_text("".join(f"prompt number {i}\n" for i in range(8)))
        for name, kind, target in (("tiny-bert", "reward", "bert"), ("tiny-gpt", "causal-lm", "gpt")):
            load_model(name, kind).save_pretrained(d / target)
            load_tokenizer(name).save_pretrained(d / target)
        stages = {
            "train-rm": ["train-rm", d / "pairs.jsonl", "--model", d / "bert", "--batch-size", 8, "--save-steps", 0],
            "ppo": ["ppo", "--policy", d / "gpt", "--reward", REWARD, "--prompts", d / "prompts.txt", "--steps", 1,
                    "--batch-size", 8, "--mini-batch-size", 4, "--max-new-tokens", 4, "--save-steps", 0],
        }
        for stage, args in stages.items():
            for config in (None, "zero2", "zero3", "fsdp"):
                out = d / f"{stage}-{config}"
                launch(config, [*args, "--out", out], d)
                report = json.loads((out / "rlhfkit.json").read_text())["sharding"]
                results["runs"][f"{stage}/{config or 'one-process'}"] = report
                print(f"{stage:8s} {config or 'one':5s} {report}", file=sys.stderr)
    lines = ["| stage | config | params / process (measured) | estimate | optimizer state / process (measured) "
             "| estimate | FSDP units |", "|---|---|---|---|---|---|---|"]
    for key, r in results["runs"].items():
        stage, config = key.split("/")
        whole = results["runs"][f"{stage}/one-process"]["trainable_param_bytes_per_process"][0]
        est = estimate(None if config == "one-process" else config, whole)
        lines.append(f"| {stage} | {config} | {max(r['trainable_param_bytes_per_process']):,} | {est['params']:,.0f} | "
                     f"{max(r['optimizer_state_bytes_per_process']):,} | {est['optimizer']:,.0f} | "
                     f"{r['fsdp_units'] or '-'} |")
    results["table"] = "\n".join(lines)
    Path(a.out).write_text(json.dumps(results, indent=1) + "\n")
    print(results["table"])


if __name__ == "__main__":
    main()
